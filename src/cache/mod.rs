//! KV caches in chosen storage kinds (fp32, fp16, bf16, q8_0, q4_0, nf4) and the decode attention
//! that reads them without dequantizing the whole cache. Layouts and measured numbers:
//! `docs/kv-cache.md`.
//!
//! - [`CacheKind`]: the storage kinds and their exact bytes per token;
//! - [`quant`]: one block's quantize / dequantize formulas;
//! - [`Rows`]: the growable rows of one (batch, KV head, segment);
//! - [`QuantKvStore`]: one attention layer's K/V (segments, fp16 window, Hadamard rotation), with
//!   [`QuantKvStore::attend`] for decode;
//! - [`QuantKvCache`]: one store per attention slot of a model.

pub mod attend;
pub mod error;
pub mod kind;
pub mod model_cache;
pub mod quant;
pub mod rotate;
pub mod rows;
mod simd;
pub mod store;

pub use attend::DecodeOptions;
pub use error::CacheError;
pub use kind::CacheKind;
pub use model_cache::QuantKvCache;
pub use rows::Rows;
pub use store::{QuantKvSpec, QuantKvStore, Segment, StreamSpec};
