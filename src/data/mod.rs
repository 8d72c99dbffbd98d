//! Memory-mapped `.npy` token datasets; tokenizers; `prepare` (text → tokens).
//!
//! The experiment runner calls [`ensure_prepared`] on a target's `data:` block and gets a
//! validated [`TokenDataset`] (train/val split) plus its [`Tokenizer`]; the trainer draws
//! `(x, y)` batches from it with a resumable [`BatchSampler`]. Classifier targets read supervised
//! arrays instead ([`SupervisedDataset`], fetched by [`ensure_supervised`] when missing).

pub mod batches;
pub mod digits;
pub mod error;
pub mod npy;
pub mod prepare;
pub mod spec;
pub mod supervised;
pub mod target_data;
pub mod tokenizer;

pub use batches::{BatchSampler, SamplerState, Split, TokenDataset};
pub use error::DataError;
pub use npy::{NpyWriter, TokenDtype, TokenFile};
pub use prepare::{PrepareSummary, PreparedData, ensure_prepared, prepare};
pub use spec::{DataSpec, PrepareSpec};
pub use supervised::{ImageShape, Part, SplitIndices, SupervisedDataset, SupervisedSpec};
pub use target_data::{TargetData, ensure_supervised};
pub use tokenizer::Tokenizer;
