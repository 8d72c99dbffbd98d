//! The transcript of a process: every request (its messages), every reply (its text and usage),
//! every user message and note, in order, as JSON lines. The whole file is rewritten atomically
//! after each entry, so a process that is killed leaves a complete transcript of what it did.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::client::{Message, Usage};
use super::error::AgentError;
use crate::record::write_atomic;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The messages sent to the model.
    Request,
    /// The model's reply.
    Reply,
    /// A message from the person (or the manifest's script).
    User,
    /// Something the process decided (a parse failure, a repair, a budget stop, a run result).
    Note,
}

/// One line of `transcript.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: usize,
    /// Seconds since the process started.
    pub at_s: f64,
    pub kind: EntryKind,
    /// The persona or role (`writer`, `@skeptic`'s role, `user`, `process`).
    pub speaker: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

impl Entry {
    /// An entry of `kind` by `speaker` saying `content` (the caller fills the rest).
    pub fn new(kind: EntryKind, speaker: &str, content: impl Into<String>) -> Self {
        Self {
            seq: 0,
            at_s: 0.0,
            kind,
            speaker: speaker.to_string(),
            content: content.into(),
            messages: None,
            max_tokens: None,
            usage: None,
            finish_reason: None,
            seconds: None,
        }
    }
}

/// The transcript and the file it lives in.
#[derive(Debug)]
pub struct Transcript {
    path: PathBuf,
    entries: Vec<Entry>,
    start: Instant,
}

impl Transcript {
    /// An empty transcript at `path` (written at the first entry).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            entries: Vec::new(),
            start: Instant::now(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Append `entry` (numbered and timed here) and rewrite the file.
    pub fn push(&mut self, mut entry: Entry) -> Result<(), AgentError> {
        entry.seq = self.entries.len();
        entry.at_s = self.start.elapsed().as_secs_f64();
        self.entries.push(entry);
        let mut text = String::new();
        for e in &self.entries {
            let line = serde_json::to_string(e).map_err(|e| AgentError::output(&self.path, e))?;
            text.push_str(&line);
            text.push('\n');
        }
        write_atomic(&self.path, text.as_bytes()).map_err(|e| AgentError::output(&self.path, e))
    }

    /// A note by the process.
    pub fn note(&mut self, content: impl Into<String>) -> Result<(), AgentError> {
        self.push(Entry::new(EntryKind::Note, "process", content))
    }
}

/// Read a transcript back (tests, `research_loop` history).
pub fn read(path: &Path) -> Result<Vec<Entry>, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::input(path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| AgentError::input(path, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_push_leaves_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transcript.jsonl");
        let mut t = Transcript::new(&path);
        t.push(Entry::new(EntryKind::User, "user", "hello")).unwrap();
        t.note("a note").unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[1].seq, back[1].kind), (1, EntryKind::Note));
        assert_eq!(back, t.entries());
    }
}
