//! Layers: one file per layer, each with its manifest spec (`*Spec`) and its built form.
//!
//! Every built layer has `forward(&self, xs, ctx)` with xs of shape (b, t, d_in) -> (b, t, d_out).

pub mod attention;
pub mod decoupled;
pub mod dropout;
pub mod embedding;
pub mod layer_norm;
pub mod linear;
pub mod rms_norm;
pub mod swiglu;

pub use attention::{Attention, AttentionMode, AttentionSpec};
pub use decoupled::{DecoupledAttention, DecoupledDims};
pub use dropout::{Dropout, DropoutSpec};
pub use embedding::{Embedder, EmbedderSpec};
pub use layer_norm::{LayerNorm, LayerNormSpec};
pub use linear::{LinearLayer, LinearSpec};
pub use rms_norm::{RmsNorm, RmsNormSpec};
pub use swiglu::{SwiGlu, SwiGluSpec};

/// One inconsistency in a layer spec; the validator prefixes the manifest path of the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Field of the spec, e.g. `n_heads` or `rope_scaling.rope_type`.
    pub field: String,
    pub message: String,
}

impl SpecProblem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
