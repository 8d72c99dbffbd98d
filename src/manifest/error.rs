//! Manifest errors: one [`Problem`] per place that is wrong (file, manifest path, line:column,
//! message, help), and [`ManifestError`], which carries all of them.
//!
//! A problem renders as `file:line:col: path: message` (the form editors can jump to); with
//! miette's graphical handler it also shows the YAML snippet with the spot underlined.

use std::path::PathBuf;
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::Serialize;
use thiserror::Error;

/// One thing wrong with a manifest, at one place.
#[derive(Debug, Clone, Error, Diagnostic, Serialize)]
#[error("{}", self.headline())]
#[diagnostic(code(caramba::manifest))]
pub struct Problem {
    /// The manifest file as the user named it.
    pub file: String,
    /// Manifest path (`targets[0].model.topology.layers[1].n_heads`); empty for the whole document.
    pub path: String,
    /// 1-based line, when the path (or an ancestor) was found in the source.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[help]
    pub help: Option<String>,
    #[source_code]
    #[serde(skip)]
    source_code: Option<NamedSource<Arc<String>>>,
    #[label("here")]
    #[serde(skip)]
    span: Option<SourceSpan>,
}

impl Problem {
    /// A problem without a location in the source (yet); see [`Problem::at`].
    pub fn new(file: impl Into<String>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
            help: None,
            source_code: None,
            span: None,
        }
    }

    /// Add a `help:` line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Locate the problem at 1-based `line:column` of `text` (the whole manifest source).
    pub fn at(mut self, line: usize, column: usize, text: &Arc<String>) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        if let Some(offset) = byte_offset(text, line, column) {
            self.source_code =
                Some(NamedSource::new(self.file.clone(), Arc::clone(text)).with_language("yaml"));
            self.span = Some(SourceSpan::new(offset.into(), 0));
        }
        self
    }

    /// `file:line:col: path: message` (parts that are unknown are left out).
    pub fn headline(&self) -> String {
        let mut out = self.file.clone();
        if let (Some(l), Some(c)) = (self.line, self.column) {
            out.push_str(&format!(":{l}:{c}"));
        }
        out.push_str(": ");
        if !self.path.is_empty() {
            out.push_str(&self.path);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        out
    }
}

/// Byte offset of 1-based `line:column` (column counted in characters) in `text`.
fn byte_offset(text: &str, line: usize, column: usize) -> Option<usize> {
    let start = if line <= 1 {
        0
    } else {
        text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)?
    };
    let rest = &text[start..];
    let in_line = rest
        .char_indices()
        .nth(column.saturating_sub(1))
        .map_or(rest.len(), |(i, _)| i);
    Some(start + in_line)
}

/// Why a manifest could not be compiled (or a target not resolved).
#[derive(Debug, Error, Diagnostic)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {}: {source}", file.display())]
    #[diagnostic(code(caramba::manifest::read))]
    Read { file: PathBuf, source: std::io::Error },
    /// The file name does not end in `.yml`, `.yaml` or `.json`.
    #[error("{}: a manifest must be a .yml, .yaml or .json file", file.display())]
    #[diagnostic(code(caramba::manifest::suffix))]
    Suffix { file: PathBuf },
    /// Syntax, schema or validation problems; all of them, in document order where known.
    #[error("{}", summary(file, problems))]
    #[diagnostic(code(caramba::manifest::invalid))]
    Invalid {
        file: String,
        #[related]
        problems: Vec<Problem>,
    },
    /// `--target` names no target or entry point.
    #[error("{file}: no target or entry point `{name}`")]
    #[diagnostic(code(caramba::manifest::target), help("{available}"))]
    UnknownTarget {
        file: String,
        name: String,
        available: String,
    },
}

fn summary(file: &str, problems: &[Problem]) -> String {
    match problems {
        [_] => format!("invalid manifest {file}: 1 problem"),
        many => format!("invalid manifest {file}: {} problems", many.len()),
    }
}

impl ManifestError {
    /// The individual problems (empty for read, suffix and target errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }

    /// Every problem's headline and help, one per line: the plain-text report (no colours, no
    /// wrapping), used by tests and by `--json`-less non-terminal output.
    pub fn plain(&self) -> String {
        match self {
            Self::Invalid { problems, .. } => {
                let mut out = String::new();
                for p in problems {
                    out.push_str("error: ");
                    out.push_str(&p.headline());
                    out.push('\n');
                    if let Some(h) = &p.help {
                        out.push_str("  help: ");
                        out.push_str(h);
                        out.push('\n');
                    }
                }
                out
            }
            other => format!("error: {other}\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headline_has_file_line_column_path_and_message() {
        let text = Arc::new("a: 1\nmodel:\n  n_heads: 3\n".to_string());
        let p = Problem::new("m.yml", "model.n_heads", "not divisible").at(3, 3, &text);
        assert_eq!(p.headline(), "m.yml:3:3: model.n_heads: not divisible");
        assert_eq!(
            p.span.map(|s| s.offset()),
            Some(text.find("n_heads").expect("present"))
        );
    }

    #[test]
    fn offsets_past_the_end_do_not_panic() {
        let text = Arc::new("é: 1".to_string());
        assert_eq!(byte_offset(&text, 1, 2), Some(2));
        assert_eq!(byte_offset(&text, 1, 99), Some(text.len()));
        assert_eq!(byte_offset(&text, 7, 1), None);
    }
}
