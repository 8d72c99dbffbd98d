//! `caramba serve`: the model behind OpenAI's HTTP protocol (`/v1/chat/completions`,
//! `/v1/completions`, `/v1/models`, `/health`), on axum + tokio.
//!
//! The pipeline of a request: [`routes`] reads the body (size and time limits), [`protocol`]
//! parses it (serde; a wrong field is a 400 naming it), [`model::Prompter`] renders the chat
//! template, tokenizes and checks the context, and the [`scheduler`] queues it for the one thread
//! that owns the model; text comes back through a channel as it is decoded, whole or as
//! server-sent events. [`limits`] holds the limits and the `--api-key` check; [`error`] the
//! OpenAI-shaped errors. The command line (`cli::serve`) resolves its flags into [`ServeConfig`]
//! and [`ServedModel`]; nothing here knows about it. See docs/serve.md.

pub mod error;
pub mod limits;
pub mod model;
pub mod protocol;
pub mod routes;
pub mod scheduler;
pub mod server;

pub use error::{ApiError, ServeError};
pub use limits::Limits;
pub use model::{ServedDraft, ServedModel};
pub use server::{BackgroundServer, ServeConfig, Server, spawn};
