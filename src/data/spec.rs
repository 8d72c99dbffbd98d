//! The `data:` block of a target: which token file to train on, and how to build it if missing.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// 1-D `.npy` token file (int32, uint16 or int64), relative to the working directory.
    pub path: String,
    /// Tokens per training example (the model sees `block_size` inputs, predicts the next ones).
    pub block_size: usize,
    /// Tokenizer of the token file: `bytes` (built in, vocab 256) or a path to an HF
    /// `tokenizer.json`. Default: `defaults.data.tokenizer`, else `bytes`.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Fraction of the tokens (the tail) held back for eval loss. Default: `defaults.data.val_frac`, else 0.1.
    #[serde(default)]
    pub val_frac: Option<f64>,
    /// How to build `path` from text when it does not exist yet.
    #[serde(default)]
    pub prepare: Option<PrepareSpec>,
}

/// Text sources for `caramba prepare` / first-use preparation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareSpec {
    /// Glob patterns of local text files (sorted, deduplicated).
    #[serde(default)]
    pub input: Vec<String>,
    /// A Debian package to download (`apt-get download`) and unpack into the cache directory;
    /// `input` globs are then matched inside it too (e.g. `python3.11-doc` with
    /// `usr/share/doc/python3.11/html/_sources/**/*.rst.txt`).
    #[serde(default)]
    pub debian_package: Option<String>,
    /// Tokenizer to use. Default: the data block's tokenizer.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Append the tokenizer's end-of-text id between documents (bytes: none). Default: true.
    #[serde(default = "yes")]
    pub separate_documents: bool,
}

fn yes() -> bool {
    true
}
