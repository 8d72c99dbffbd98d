//! Errors of the data stage: token files, tokenizers, preparation. Each names the file it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DataError {
    #[error("token file `{path}` does not exist")]
    #[diagnostic(help("build it with `caramba prepare`, or give the data block a `prepare:` section"))]
    Missing { path: PathBuf },

    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("`{path}` is not a valid .npy token file: {reason}")]
    #[diagnostic(help(
        "expected a 1-D little-endian array of int32, uint16 or int64 (np.save of a 1-D array)"
    ))]
    BadNpy { path: PathBuf, reason: String },

    #[error("`{path}`: token {index} has id {value}, outside the vocabulary of {vocab}")]
    #[diagnostic(help("the file was made with another tokenizer, or the model's vocab_size is too small"))]
    IdOutOfRange {
        path: PathBuf,
        index: usize,
        value: i64,
        vocab: usize,
    },

    #[error(
        "`{path}`: the {split} split has {tokens} tokens, too few for one block of {block_size} (+1 target)"
    )]
    #[diagnostic(help("use a smaller block_size, a different val_frac, or more data"))]
    TooShort {
        path: PathBuf,
        split: &'static str,
        tokens: usize,
        block_size: usize,
    },

    #[error("val_frac must be in [0, 1), got {val_frac}")]
    BadValFrac { val_frac: f64 },

    #[error("cannot load tokenizer `{name}`: {reason}")]
    #[diagnostic(help("use `bytes` or the path of an HF tokenizer.json"))]
    Tokenizer { name: String, reason: String },

    #[error("`{path}` is not UTF-8 text, which the `{tokenizer}` tokenizer needs")]
    NotText { path: PathBuf, tokenizer: String },

    #[error("input pattern `{pattern}` is invalid: {reason}")]
    BadPattern { pattern: String, reason: String },

    #[error("no text files matched: {patterns}")]
    #[diagnostic(help(
        "check the `input:` globs (relative globs are matched inside the package when `debian_package` is set)"
    ))]
    NoInput { patterns: String },

    #[error("`{command}` failed: {reason}")]
    #[diagnostic(help(
        "downloading a Debian package needs `apt-get` and `dpkg-deb` and a reachable package mirror"
    ))]
    Command { command: String, reason: String },

    #[error("the prepared token file would be empty")]
    Empty,

    #[error("`{path}`: row {row} has label {value}, outside the {n_classes} classes (0..={max})", max = n_classes.saturating_sub(1))]
    #[diagnostic(help(
        "labels are class indices 0..n_classes-1; check `n_classes` in the data block or the labels file"
    ))]
    LabelOutOfRange {
        path: PathBuf,
        row: usize,
        value: i64,
        n_classes: usize,
    },

    #[error("`{path}`: row {row}, feature {column} is {value}, not a finite number")]
    #[diagnostic(help("replace or drop the NaN/infinite values before training"))]
    NonFiniteFeature {
        path: PathBuf,
        row: usize,
        column: usize,
        value: f32,
    },

    #[error("`{path}` has the wrong shape: {reason}")]
    BadShape { path: PathBuf, reason: String },

    #[error("`{path}`: SHA-256 {found}, expected {expected}")]
    #[diagnostic(help(
        "the cached or downloaded file is damaged or changed upstream; delete it and run `caramba prepare` again"
    ))]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },

    #[error("cannot download {what} from {url}: {reason}")]
    #[diagnostic(help("`prepare` needs https://pypi.org (or put the file in the cache directory by hand)"))]
    Download {
        what: String,
        url: String,
        reason: String,
    },

    #[error("the {split} split is empty ({rows} rows, test_frac {test_frac}, val_frac {val_frac})")]
    #[diagnostic(help("use smaller fractions or more rows"))]
    EmptySplit {
        split: &'static str,
        rows: usize,
        test_frac: f64,
        val_frac: f64,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the cause is the user's input (bad file, bad settings) rather than the environment.
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            Self::Io { .. } | Self::Command { .. } | Self::Download { .. }
        )
    }
}
