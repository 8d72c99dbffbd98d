//! Errors of the artifact writers; each names the file it concerns.

use std::path::PathBuf;

/// Why an artifact could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The report holds numbers JSON cannot represent.
    #[error("the report holds non-finite numbers at {}", fields.join(", "))]
    NonFinite {
        /// Paths of the offending fields (`"latency[3].prefill_ms.median"`).
        fields: Vec<String>,
    },
    /// Creating the directory or writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// Serializing `report.json` failed.
    #[error("cannot serialize {}: {source}", path.display())]
    Json {
        /// The file being written.
        path: PathBuf,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// Writing a CSV record failed.
    #[error("cannot write CSV {}: {source}", path.display())]
    Csv {
        /// The file being written.
        path: PathBuf,
        /// The CSV writer's error.
        source: csv::Error,
    },
    /// Drawing or encoding a figure failed.
    #[error("cannot draw {}: {message}", path.display())]
    Plot {
        /// The figure being drawn.
        path: PathBuf,
        /// What the plotting library or the PNG encoder reported.
        message: String,
    },
    /// PNG figures were requested but no usable TrueType/OpenType font was found.
    #[error(
        "PNG figures need a TrueType font and none was found (looked in: {}); \
         help: install fonts-dejavu-core, set CARAMBA_FONT=/path/to/font.ttf, or ask for SVG figures",
        searched.join(", ")
    )]
    NoFont {
        /// The places searched.
        searched: Vec<String>,
    },
}

impl ArtifactError {
    /// Makes a file-relative path in the error absolute under `dir` (writers name files, `write_all` knows where).
    pub(crate) fn in_dir(self, dir: &std::path::Path) -> Self {
        let join = |path: PathBuf| if path.is_relative() { dir.join(path) } else { path };
        match self {
            ArtifactError::Io { path, source } => ArtifactError::Io {
                path: join(path),
                source,
            },
            ArtifactError::Json { path, source } => ArtifactError::Json {
                path: join(path),
                source,
            },
            ArtifactError::Csv { path, source } => ArtifactError::Csv {
                path: join(path),
                source,
            },
            ArtifactError::Plot { path, message } => ArtifactError::Plot {
                path: join(path),
                message,
            },
            other => other,
        }
    }
}
