//! Memory-mapped `.npy` token datasets; tokenizers; `prepare` (text → tokens).
//!
//! The experiment runner calls [`ensure_prepared`] on a target's `data:` block and gets a
//! validated [`TokenDataset`] (train/val split) plus its [`Tokenizer`]; the trainer draws
//! `(x, y)` batches from it with a resumable [`BatchSampler`].

pub mod batches;
pub mod error;
pub mod npy;
pub mod prepare;
pub mod spec;
pub mod tokenizer;

pub use batches::{BatchSampler, SamplerState, Split, TokenDataset};
pub use error::DataError;
pub use npy::{NpyWriter, TokenDtype, TokenFile};
pub use prepare::{PrepareSummary, PreparedData, ensure_prepared, prepare};
pub use spec::{DataSpec, PrepareSpec};
pub use tokenizer::Tokenizer;
