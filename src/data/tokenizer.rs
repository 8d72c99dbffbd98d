//! Tokenizers by name: `bytes` (built in: id = byte value, vocab 256, lossless) or the path of an
//! HF `tokenizer.json` (the `tokenizers` crate, fancy-regex backend).

use std::path::Path;

use super::error::DataError;

/// End-of-text tokens looked up (in this order) to separate documents.
const EOS_CANDIDATES: &[&str] = &["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>"];

#[derive(Clone)]
pub enum Tokenizer {
    /// Raw UTF-8 bytes: vocab 256, no special tokens.
    Bytes,
    /// An HF tokenizer loaded from `tokenizer.json`.
    Hf(Box<tokenizers::Tokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes => write!(f, "Tokenizer::Bytes"),
            Self::Hf(t) => write!(f, "Tokenizer::Hf(vocab {})", t.get_vocab_size(true)),
        }
    }
}

impl Tokenizer {
    /// `bytes`, or a path to a `tokenizer.json` (a directory holding one works too).
    pub fn from_name(name: &str) -> Result<Self, DataError> {
        if name == "bytes" {
            return Ok(Self::Bytes);
        }
        let path = Path::new(name);
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        if !file.exists() {
            return Err(DataError::Tokenizer {
                name: name.into(),
                reason: format!("`{}` does not exist", file.display()),
            });
        }
        tokenizers::Tokenizer::from_file(&file)
            .map(|t| Self::Hf(Box::new(t)))
            .map_err(|e| DataError::Tokenizer {
                name: name.into(),
                reason: e.to_string(),
            })
    }

    /// Number of ids (one past the largest id, added tokens included).
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bytes => 256,
            Self::Hf(t) => {
                let max = t
                    .get_vocab(true)
                    .values()
                    .copied()
                    .max()
                    .map_or(0, |m| m as usize + 1);
                max.max(t.get_vocab_size(true))
            }
        }
    }

    /// The end-of-text id used between documents, if the tokenizer has one (`bytes`: none).
    pub fn eos_id(&self) -> Option<u32> {
        match self {
            Self::Bytes => None,
            Self::Hf(t) => EOS_CANDIDATES.iter().find_map(|s| t.token_to_id(s)),
        }
    }

    /// Ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        match self {
            Self::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Self::Hf(t) => t
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| DataError::Tokenizer {
                    name: "tokenizer.json".into(),
                    reason: e.to_string(),
                }),
        }
    }

    /// Text of `ids`. `bytes`: exact for ids that came from valid UTF-8 (invalid sequences become
    /// U+FFFD; use [`Tokenizer::decode_bytes`] for the raw bytes); ids ≥ 256 are an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        match self {
            Self::Bytes => Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned()),
            Self::Hf(t) => t.decode(ids, false).map_err(|e| DataError::Tokenizer {
                name: "tokenizer.json".into(),
                reason: e.to_string(),
            }),
        }
    }

    /// Raw bytes of `ids` for the `bytes` tokenizer (UTF-8 of the decoded text otherwise).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, DataError> {
        match self {
            Self::Bytes => ids
                .iter()
                .map(|&id| {
                    u8::try_from(id).map_err(|_| DataError::Tokenizer {
                        name: "bytes".into(),
                        reason: format!("id {id} is not a byte (vocab 256)"),
                    })
                })
                .collect(),
            Self::Hf(_) => self.decode(ids).map(String::into_bytes),
        }
    }

    /// Ids of a raw file for the `bytes` tokenizer (no UTF-8 requirement); `None` for HF tokenizers.
    pub(crate) fn encode_raw(&self, bytes: &[u8]) -> Option<Vec<u32>> {
        matches!(self, Self::Bytes).then(|| bytes.iter().map(|&b| u32::from(b)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_is_lossless() {
        let text = "Grüße, 世界! \u{1F600}\n\ttabs";
        let t = Tokenizer::from_name("bytes").expect("built in");
        let ids = t.encode(text).expect("bytes encode");
        assert_eq!(ids.len(), text.len());
        assert_eq!(t.decode(&ids).expect("decode"), text);
        assert_eq!(t.vocab_size(), 256);
        assert_eq!(t.eos_id(), None);
        assert!(t.decode(&[300]).is_err());
    }

    #[test]
    fn missing_tokenizer_file_names_it() {
        let err = Tokenizer::from_name("/nonexistent/tok.json").expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/tok.json"), "{err}");
    }
}
