//! Why a benchmark could not run: bad input files, a model without what the benchmark needs, or a
//! failure inside the model.

use std::path::PathBuf;

/// A benchmark's failure.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BenchError {
    /// An input file (task, prompts, suite, token data) is unreadable.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An input file is readable but malformed; `line` is 1-based where known.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    #[diagnostic(help("{help}"))]
    BadInput {
        path: PathBuf,
        line: Option<usize>,
        message: String,
        help: String,
    },
    /// The benchmark needs something the model does not have (a tokenizer, a longer context).
    #[error("model `{model}`: {message}")]
    Model { model: String, message: String },
    /// Inside the model or the generator.
    #[error("model `{model}`: {source}")]
    Compute {
        model: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Preparing a text set's token file (`prepare:`), or opening it.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Data(#[from] crate::data::DataError),
    /// Writing the results.
    #[error("writing the results: {0}")]
    Write(String),
}

impl BenchError {
    /// A compute failure of `model`.
    pub fn compute(model: &str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Compute {
            model: model.to_string(),
            source: Box::new(e),
        }
    }

    /// Whether the user's input (not the run) is at fault: exit code 2 on the command line.
    pub fn is_usage(&self) -> bool {
        match self {
            Self::Data(e) => e.is_usage(),
            _ => matches!(self, Self::Io { .. } | Self::BadInput { .. } | Self::Model { .. }),
        }
    }
}
