//! Token ids → text as they are generated: incremental detokenization (never splitting a UTF-8
//! character or a byte-level token sequence) and stop strings (the text is cut before the match,
//! and text that could still become a stop string is held back).

use crate::loader::{TextTokenizer, TokenizeError};

/// Turns a growing sequence of ids into text deltas.
pub struct TextStream<'t> {
    tokenizer: &'t TextTokenizer,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
    /// Text decoded so far (stop strings are searched here).
    text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
    stop_strings: Vec<String>,
    stopped: bool,
}

impl<'t> TextStream<'t> {
    pub fn new(tokenizer: &'t TextTokenizer, stop_strings: Vec<String>) -> Self {
        let stop_strings = stop_strings.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            tokenizer,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
            text: String::new(),
            emitted: 0,
            stop_strings,
            stopped: false,
        }
    }

    /// Add a token; the text that is now safe to show (maybe empty).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizeError> {
        if self.stopped {
            return Ok(String::new());
        }
        self.ids.push(id);
        let before = self.tokenizer.decode(&self.ids[self.prefix..self.read], false)?;
        let now = self.tokenizer.decode(&self.ids[self.prefix..], false)?;
        if now.len() > before.len()
            && !now.ends_with('\u{fffd}')
            && let Some(delta) = now.get(before.len()..)
        {
            self.text.push_str(delta);
            self.prefix = self.read;
            self.read = self.ids.len();
        }
        Ok(self.release())
    }

    /// True once a stop string matched.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Whatever is left to show when generation ends (held-back text, never a stop string).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    /// All text so far, up to a matched stop string.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn release(&mut self) -> String {
        if let Some(at) = self
            .stop_strings
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            self.text.truncate(at);
            let out = self.text.get(self.emitted..).unwrap_or("").to_string();
            self.emitted = self.text.len();
            return out;
        }
        // Hold back the longest tail that is a prefix of a stop string.
        let mut safe = self.text.len();
        for s in &self.stop_strings {
            for k in (1..s.len()).rev() {
                if s.is_char_boundary(k) && self.text.ends_with(&s[..k]) {
                    safe = safe.min(self.text.len() - k);
                    break;
                }
            }
        }
        if safe <= self.emitted {
            return String::new();
        }
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        out
    }
}
