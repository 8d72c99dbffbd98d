//! Why an agent process stopped: the endpoint (unreachable, an HTTP error status, a reply that is
//! not OpenAI's shape), the in-process server, the budget, its inputs, its outputs, or a model
//! that never gave a usable answer.

use std::path::PathBuf;

use super::budget::Exhausted;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum AgentError {
    #[error("cannot reach the endpoint {url}: {message}")]
    #[diagnostic(help(
        "start one (`caramba serve --model smollm2-135m`), or leave `endpoint.url` out so that the process starts its own"
    ))]
    Unreachable { url: String, message: String },
    #[error("the endpoint {url} answered HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the endpoint {url} sent a reply that is not an OpenAI chat completion: {message}")]
    Protocol { url: String, message: String },
    #[error("cannot start the in-process server for `{model}`: {message}")]
    #[diagnostic(help(
        "fetch the weights first (`caramba fetch smollm2-135m`), or name a running server in `endpoint.url`"
    ))]
    Serve { model: String, message: String },
    #[error("the budget is spent: {0}")]
    Budget(Exhausted),
    #[error("cannot read {path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("cannot write {path}: {message}")]
    Output { path: PathBuf, message: String },
    #[error("{what}: no usable answer after {attempts} attempts; the last problem: {last}")]
    #[diagnostic(help(
        "every reply is in the transcript; a larger model, more `attempts` or a larger token budget may help"
    ))]
    NoAnswer {
        what: String,
        attempts: usize,
        last: String,
    },
}

impl AgentError {
    /// Exit code: 2 for a problem with the inputs the manifest names, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Input { .. } => 2,
            _ => 1,
        }
    }

    pub(crate) fn output(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Self::Output {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    pub(crate) fn input(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Self::Input {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}
