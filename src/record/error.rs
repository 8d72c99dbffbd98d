//! Errors of the record layer: each names the file or directory it concerns.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RecordError {
    #[error("cannot write `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write `{path}` as JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("run directory `{dir}` is in use by {}", holder(.pid))]
    #[diagnostic(help(
        "wait for that run to finish, or use another run directory; the lock (`.lock` in the run \
         directory) is released when its process ends"
    ))]
    Locked { dir: PathBuf, pid: Option<u32> },
}

fn holder(pid: &Option<u32>) -> String {
    pid.map_or_else(|| "another process".to_string(), |p| format!("process {p}"))
}

impl RecordError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Read {
            path: path.into(),
            source,
        }
    }

    /// As a plain `std::io::Error` for callers whose errors hold one (the path goes into the message).
    pub fn into_io(self) -> std::io::Error {
        match self {
            Self::Io { source, .. } | Self::Read { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        }
    }
}
