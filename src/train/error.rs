//! Errors of a training run.

use std::path::PathBuf;

use crate::data::DataError;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TrainError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Data(#[from] DataError),

    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),

    /// An instrument (events.jsonl, TensorBoard) could not be opened or written.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Instrument(#[from] crate::instrument::InstrumentError),

    #[error("cannot write `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("train.{field}: {reason}")]
    BadSpec { field: &'static str, reason: String },

    #[error("the data has ids up to {data_vocab} but the model's vocabulary has {model_vocab} entries")]
    #[diagnostic(help("set embedder.vocab_size to at least the tokenizer's vocabulary"))]
    VocabMismatch { data_vocab: usize, model_vocab: usize },

    #[error("loss became {loss} at step {step}; stopped (the last good checkpoint is kept)")]
    #[diagnostic(help("lower the learning rate, raise warmup_steps, or enable grad_clip"))]
    NonFinite { step: usize, loss: f64 },

    #[error(
        "out of device memory at step {step} ({phase}) with batch size {batch_size}{}: {detail}",
        in_use_gib.map(|g| format!(", {g:.2} GiB of tensors in use")).unwrap_or_default()
    )]
    #[diagnostic(help(
        "lower train.batch_size (raise grad_accum to keep the tokens per step) or the block size, use dtype bf16, or pick a larger GPU; checkpoints already written are intact"
    ))]
    OutOfMemory {
        step: usize,
        phase: &'static str,
        in_use_gib: Option<f64>,
        batch_size: usize,
        detail: String,
    },

    #[error("interrupted at step {step}; checkpoint saved to `{checkpoint}`")]
    #[diagnostic(help("run the same command again to resume"))]
    Interrupted { step: usize, checkpoint: PathBuf },

    #[error("checkpoint `{dir}` belongs to another manifest (fingerprint {found}, this run is {expected})")]
    #[diagnostic(help("use a new run directory, or `--fresh` to discard the old checkpoints"))]
    FingerprintMismatch {
        dir: PathBuf,
        found: String,
        expected: String,
    },

    #[error("checkpoint `{dir}`: {reason}")]
    Checkpoint { dir: PathBuf, reason: String },

    #[error("no checkpoint in `{root}` is readable, so this run would start over and discard them:\n  {}", problems.join("\n  "))]
    #[diagnostic(help(
        "repair or move away the files named above, or pass `--fresh` to start over and delete them"
    ))]
    UnreadableCheckpoints { root: PathBuf, problems: Vec<String> },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Record(#[from] crate::record::RecordError),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Process exit code for the CLI: 130 interrupted, 2 bad settings or data, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Interrupted { .. } => 130,
            Self::BadSpec { .. } | Self::VocabMismatch { .. } | Self::FingerprintMismatch { .. } => 2,
            Self::Data(e) if e.is_usage() => 2,
            _ => 1,
        }
    }
}
