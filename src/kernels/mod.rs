//! Hand-written GPU kernels and their launchers.
//!
//! The CUDA sources live in `kernels/*.cu` at the repository root; with the `cuda` feature,
//! `build.rs` compiles them with nvcc into fat binaries that are embedded here and loaded once per
//! device. Every kernel has a plain candle-ops path that computes the same function: that path is
//! what runs without the feature, off CUDA devices and on shapes a kernel does not take, and it is
//! the reference the kernel tests compare against.
//!
//! Metal versions (`kernels/*.metal`) are compiled only on macOS and have not been run here.

/// Fused T = 1 attention over the KV cache (standard, GQA and DBA; plain and quantized storage).
pub mod decode_attention;
/// Flash-attention-2 style training attention: forward with the row logsumexp, recomputing backward.
pub mod flash_attention;
/// Multi-tensor AdamW and gradient sums of squares (one launch for every parameter).
pub mod optimizer;
/// Fused RMSNorm backward: dx and deterministic dw in two launches.
pub mod rms_norm;
/// The embedding table's gradient: deterministic row sums in one launch, no zero fill.
pub mod embedding;
/// Fused SwiGLU activation silu(a) ⊙ b: forward and both gradients in one pass each.
pub mod swiglu;
/// Fused cross-entropy over the vocabulary: per-row loss and logsumexp, and dlogits in one pass.
pub mod cross_entropy;
/// The once-per-reason log line of a kernel that hands a call to its candle-ops path.
pub mod fallback;
/// The gate for kernels that are built and CPU-tested but not yet run on a GPU (off by default).
pub mod unverified;
/// Quantized cache rows laid out for the GPU decode kernel (q8_0 / q4_0 blocks).
pub mod quant_rows;
#[cfg(feature = "cuda")]
mod cuda;

pub use decode_attention::{
    DecodeScales, KeySegments, QuantSegment, decode_attention, decode_attention_quantized, set_fused_decode,
};
pub use flash_attention::set_fused_training;
pub use quant_rows::quantize_rows;
pub use unverified::{set_unverified_kernels, unverified_kernels};
