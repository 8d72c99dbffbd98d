//! KV caches in chosen storage kinds (fp32, fp16, bf16, q8_0, q4_0, nf4) and the decode attention
//! that reads them without dequantizing the whole cache. Layouts and measured numbers:
//! `docs/kv-cache.md`.
//!
//! - [`CacheKind`]: the storage kinds and their exact bytes per token;
//! - [`quant`]: one block's quantize / dequantize formulas;
//! - [`Rows`]: the growable rows of one (batch, KV head, segment);
//! - [`QuantKvStore`]: one attention layer's K/V (segments, fp16 window, Hadamard rotation), with
//!   [`QuantKvStore::attend`] for decode;
//! - [`PlainKv`]: one attention layer's K/V as f32/f16/bf16 tensors;
//! - [`RecurrentState`]: a recurrent (SSM) layer's state after its last positions;
//! - [`LayerCache`]: one slot, plain, quantized or recurrent, with one truncate/reset API.

pub mod attend;
pub mod error;
pub mod kind;
pub mod layer_cache;
pub mod plain;
pub mod quant;
pub mod recurrent;
pub mod rotate;
pub mod rows;
mod simd;
pub mod store;

pub use attend::DecodeOptions;
pub use error::CacheError;
pub use kind::CacheKind;
pub use layer_cache::LayerCache;
pub use plain::PlainKv;
pub use recurrent::{ROLLBACK_WINDOW, RecurrentState};
pub use rows::Rows;
pub use store::{QuantKvSpec, QuantKvStore, Segment, StreamSpec};
