//! Layers: one file per layer, each with its manifest spec (`*Spec`), its [`LayerSpec`] and
//! [`LayerType`] impls (names, problems, widths, parameters, KV bytes, description) and its built
//! form ([`Layer`]).
//!
//! Every built layer has `forward(&self, xs, ctx)` with xs of shape (b, t, d_in) -> (b, t, d_out).
//! Adding a layer: its file here (plus its `pub mod` line) and one line in the `layers!` table of
//! `src/topology/mod.rs`; see docs/layers.md.

pub mod activation;
pub mod attention;
pub mod decoupled;
pub mod dropout;
pub mod embedding;
pub mod glu;
pub mod layer_norm;
pub mod linear;
pub mod lora;
pub mod moe;
pub mod patch_embed;
pub mod pool;
pub mod rms_norm;
pub mod rope;
pub mod spec;
pub mod ssm;
pub mod swiglu;

pub use activation::{Activation, ActivationSpec};
pub use attention::{Attention, AttentionMode, AttentionSpec, DecoupledSpec};
pub use decoupled::{DecoupledAttention, DecoupledDims};
pub use dropout::{Dropout, DropoutSpec};
pub use embedding::{Embedder, EmbedderSpec};
pub use glu::{Glu, GluActivation, GluSpec};
pub use layer_norm::{LayerNorm, LayerNormSpec};
pub use linear::{LinearLayer, LinearSpec};
pub use lora::{LoraLinear, LoraSpec};
pub use moe::{Moe, MoeSpec};
pub use patch_embed::{PatchEmbed, PatchEmbedSpec};
pub use pool::{Pool, PoolMode, PoolSpec};
pub use rms_norm::{RmsNorm, RmsNormSpec};
pub use rope::{RopeSpec, RotaryLayer};
pub use spec::{Layer, LayerSpec, LayerType, MAX_DIM, SpecProblem, Widths};
pub use ssm::{Ssm, SsmSpec};
pub use swiglu::{SwiGlu, SwiGluSpec};
