//! Ops: the differentiable and fused functions layers are built from — attention's scaled dot
//! product, softmax, the cross-entropy over the vocabulary, RoPE, the closed-form-backward
//! plumbing — and the CPU decode kernels for quantized weights with their thread pool. Layers (`crate::layer`) own parameters and manifest
//! specs; ops own neither.

pub mod closed_form;
pub mod cross_entropy;
pub mod embedding;
pub mod q4_1_packed;
pub mod qmatvec;
pub mod rope;
pub mod selective_scan;
pub mod sdpa;
pub mod softmax;
pub mod spin_pool;
pub mod swiglu;

pub use rope::{Rope, RopeScaling};
