//! Text ⇄ token ids for a loaded model, with its special ids and chat template.
//!
//! From an HF directory: `tokenizer.json` (+ `tokenizer_config.json` for the chat template and
//! special tokens). From a GGUF file: a byte-level BPE built from `tokenizer.ggml.tokens` and
//! `tokenizer.ggml.merges`, with the pre-tokenizer named by `tokenizer.ggml.pre` (llama.cpp's
//! names), control tokens marked special, and `add_bos_token` honoured.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::LoadError;
use super::gguf::GgufFile;

/// Encoding or decoding failed (the message is the tokenizers library's).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("tokenizer: {0}")]
pub struct TokenizeError(pub String);

/// A model's tokenizer and its special tokens.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Beginning-of-sequence id, when the model has one.
    pub bos_token_id: Option<u32>,
    /// Every id that ends generation.
    pub eos_token_ids: Vec<u32>,
    /// Prepend `bos_token_id` when encoding with special tokens (GGUF `add_bos_token`; an HF
    /// tokenizer.json does this in its post-processor instead).
    add_bos: bool,
    /// The Jinja chat template, when the model has one.
    pub chat_template: Option<String>,
}

impl TextTokenizer {
    /// `tokenizer.json` (+ optional `tokenizer_config.json`, `chat_template.jinja`,
    /// `generation_config.json`) in `dir`;
    /// `eos` holds the ids the model config names.
    pub fn from_hf_dir(dir: &Path, bos: Option<u32>, eos: &[u32]) -> Result<Self, LoadError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(LoadError::NotFound { path });
        }
        let inner = Tokenizer::from_file(&path).map_err(|e| LoadError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut eos_ids = eos.to_vec();
        let mut chat_template = None;
        let cfg_path = dir.join("tokenizer_config.json");
        if let Some(cfg) = read_json(&cfg_path)? {
            chat_template = match cfg.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(String::from)),
                _ => None,
            };
            if let Some(id) = special_id(&inner, cfg.get("eos_token")) {
                eos_ids.push(id);
            }
        }
        // why: HF's newer layout keeps the template in its own file, which then wins over
        // tokenizer_config.json's.
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let text = std::fs::read_to_string(&jinja).map_err(|e| LoadError::Tokenizer {
                path: jinja.clone(),
                message: e.to_string(),
            })?;
            chat_template = Some(text);
        }
        if let Some(gen_cfg) = read_json(&dir.join("generation_config.json"))?
            && let Some(v) = gen_cfg.get("eos_token_id")
        {
            match v {
                serde_json::Value::Number(n) => eos_ids.extend(n.as_u64().map(|x| x as u32)),
                serde_json::Value::Array(a) => {
                    eos_ids.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32))
                }
                _ => {}
            }
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Ok(Self {
            inner,
            bos_token_id: bos,
            eos_token_ids: eos_ids,
            add_bos: false,
            chat_template,
        })
    }

    /// The tokenizer embedded in a GGUF file (`tokenizer.ggml.model = gpt2`, byte-level BPE).
    pub fn from_gguf(g: &GgufFile) -> Result<Self, LoadError> {
        let err = |message: String| LoadError::Tokenizer {
            path: g.path.clone(),
            message,
        };
        let model = g.meta_str("tokenizer.ggml.model").unwrap_or("(missing)");
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer.ggml.model `{model}` is not supported (byte-level BPE `gpt2` is); \
                 pass an HF directory with tokenizer.json instead"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>, LoadError> {
            match g.content.metadata.get(key) {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.to_string()
                            .cloned()
                            .map_err(|_| err(format!("`{key}` holds a non-string")))
                    })
                    .collect(),
                _ => Err(err(format!("missing metadata `{key}`"))),
            }
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| err(format!("bad merge `{m}`")))
            })
            .collect::<Result<_, _>>()?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| err(format!("building the BPE: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        let pre = g.meta_str("tokenizer.ggml.pre").unwrap_or("default");
        inner.with_pre_tokenizer(Some(pre_tokenizer(pre).map_err(err)?));
        inner.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
        let types: Vec<u32> = match g.content.metadata.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.to_i32().map(|x| x as u32).or_else(|_| v.to_u32()).unwrap_or(1))
                .collect(),
            _ => Vec::new(),
        };
        // llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
        let special: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == 3)
            .filter_map(|(i, _)| tokens.get(i))
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        let user: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == 4)
            .filter_map(|(i, _)| tokens.get(i))
            .map(|t| AddedToken::from(t.clone(), false))
            .collect();
        inner
            .add_special_tokens(special)
            .map_err(|e| err(e.to_string()))?;
        inner.add_tokens(user).map_err(|e| err(e.to_string()))?;
        let id = |key: &str| match g.content.metadata.get(key) {
            Some(v) => v.to_u32().ok().or_else(|| v.to_i32().ok().map(|x| x as u32)),
            None => None,
        };
        let add_bos = matches!(
            g.content.metadata.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );
        Ok(Self {
            inner,
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_ids: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
            add_bos,
            chat_template: g.meta_str("tokenizer.chat_template").map(String::from),
        })
    }

    /// Token ids of `text`; `add_special` adds what the model expects around a sequence (BOS).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizeError> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| TokenizeError(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        if add_special
            && self.add_bos
            && let Some(bos) = self.bos_token_id
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Text of `ids` (special tokens included unless `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizeError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizeError(e.to_string()))
    }

    /// The string of a single token id (e.g. `<|im_end|>`).
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// llama.cpp's pre-tokenizer names → the HF pre-tokenizer that splits text the same way.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, String> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let split = |re: &str| -> Result<PreTokenizerWrapper, String> {
        let split = Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| e.to_string())?;
        Ok(Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into())
    };
    Ok(match pre {
        // SmolLM: every digit alone, then GPT-2's byte-level split (HF tokenizer.json of SmolLM2).
        "smollm" => Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])
        .into(),
        "llama3" | "llama-bpe" | "smaug-bpe" | "dbrx" => split(LLAMA3)?,
        "qwen2" => split(QWEN2)?,
        "gpt2" | "default" | "gpt-2" => ByteLevel::new(false, true, true).into(),
        other => {
            tracing::warn!("unknown GGUF pre-tokenizer `{other}`; splitting text as GPT-2 does");
            ByteLevel::new(false, true, true).into()
        }
    })
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, LoadError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| LoadError::Corrupt {
            file: PathBuf::from(path),
            format: "JSON",
            message: e.to_string(),
        })
}

/// The id of a special token written as `"<s>"` or `{"content": "<s>", …}`.
fn special_id(tok: &Tokenizer, v: Option<&serde_json::Value>) -> Option<u32> {
    let s = match v? {
        serde_json::Value::String(s) => s.as_str(),
        other => other.get("content")?.as_str()?,
    };
    tok.token_to_id(s)
}
