//! Errors of the instruments: a file that cannot be created or written (with its path and what to
//! do), and a sink caramba does not have.

use std::path::{Path, PathBuf};

/// Why an instrument could not be opened or written.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum InstrumentError {
    /// Creating, reading or writing a file or directory failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    #[diagnostic(code(caramba::instrument::io))]
    Io {
        /// What was being done (`create the TensorBoard directory`, `write`).
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
        /// What to do about it.
        #[help]
        hint: String,
    },
    /// W&B or HDF5, which the original had and caramba does not.
    #[error("`{name}` is not supported in caramba; use tensorboard or jsonl")]
    #[diagnostic(
        code(caramba::instrument::unsupported),
        help(
            "write `defaults.logging.instrument: [tensorboard]`; `wandb sync <run dir>/tb` can upload TensorBoard files to W&B afterwards"
        )
    )]
    Unsupported { name: String },
}

impl InstrumentError {
    /// An I/O error on `path` while doing `action`, with the default hint for files in the run
    /// directory.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
            hint: "check that the run directory exists, is writable and its disk is not full; \
                   or remove the instrument from `defaults.logging.instrument`"
                .into(),
        }
    }
}
