//! Memory-mapped `.npy` token datasets; tokenizers; `prepare` (text → tokens).

pub mod spec;

pub use spec::{DataSpec, PrepareSpec};
