//! What every layer tells the compiler about itself: the traits a layer's own file implements.
//!
//! - [`LayerType`]: its `type:` name and aliases (and what an alias implies);
//! - [`LayerSpec`]: its validation problems, widths, parameter count, KV bytes per token, its
//!   `--print-plan` description, and how it builds;
//! - [`Layer`]: the built layer's `forward(xs, ctx)`, (b, t, d_in) -> (b, t, d_out).
//!
//! The topology's `layers!` table (`src/topology/mod.rs`) lists each layer once; the node enum,
//! the deserializer, the validator, the stats and the renderer all ask these traits.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::CacheKind;
use crate::model::context::ForwardCtx;

/// Largest width, head count or vocabulary accepted (2^24).
pub const MAX_DIM: usize = 1 << 24;

/// One inconsistency in a layer spec; the validator prefixes the manifest path of the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Field of the spec, e.g. `n_heads` or `rope_scaling.rope_type`.
    pub field: String,
    pub message: String,
    /// A `help:` line: how to fix it. Default: none.
    pub help: Option<String>,
}

impl SpecProblem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A size field must be in `1..=MAX_DIM`; pushes the problem and returns false when it is not.
pub fn check_dim(out: &mut Vec<SpecProblem>, field: &str, v: usize) -> bool {
    if v == 0 || v > MAX_DIM {
        out.push(SpecProblem::new(
            field,
            format!("must be in 1..={MAX_DIM} (got {v})"),
        ));
        false
    } else {
        true
    }
}

/// A norm's epsilon must be small, positive and finite.
pub fn check_eps(out: &mut Vec<SpecProblem>, field: &str, v: f64) {
    if !(v.is_finite() && v > 0.0) {
        out.push(SpecProblem::new(
            field,
            format!("must be a small positive number (got {v})"),
        ));
    }
}

/// The widths a layer expects and produces, each with the field that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Widths {
    /// `(field, width)` of the input, e.g. `("d_in", 64)`.
    pub d_in: (&'static str, usize),
    /// `(field, width)` of the output; the same field as `d_in` for width-preserving layers.
    pub d_out: (&'static str, usize),
}

impl Widths {
    /// A layer that maps `field` features to as many (`d_model → d_model`).
    pub fn preserving(field: &'static str, d: usize) -> Self {
        Self {
            d_in: (field, d),
            d_out: (field, d),
        }
    }
}

/// What a layer's manifest spec tells the compiler (object-safe: the validator, stats and renderer
/// see `&dyn LayerSpec`).
pub trait LayerSpec {
    /// Every inconsistency of the spec, each at its field (size bounds included); the validator
    /// adds the manifest path of the layer and its line:column.
    fn problems(&self) -> Vec<SpecProblem>;
    /// Input and output widths; `None` for a layer that passes any width through (dropout).
    fn widths(&self) -> Option<Widths>;
    /// Trainable parameters (saturating).
    fn params(&self) -> u64;
    /// K and V values this layer caches per token (multiply by the bytes per value). Default: 0.
    fn kv_values_per_token(&self) -> u64 {
        0
    }
    /// Exact cached bytes per token with K and V stored as `kind` (block scales included).
    /// Default: 0.
    fn kv_bytes_per_token(&self, _kind: CacheKind) -> u64 {
        0
    }
    /// The `--print-plan` attributes after the path (`d_model=64 d_ff=192`).
    fn describe(&self) -> String;
    /// Build with weights under `vb`'s prefix; a layer with a KV cache takes slot `*next_slot` and
    /// advances it.
    fn build(&self, vb: VarBuilder, next_slot: &mut usize) -> Result<Box<dyn Layer>>;
}

/// A layer's `type:` names (not object-safe: used by the `layers!` table).
pub trait LayerType: LayerSpec + Serialize + DeserializeOwned {
    /// The canonical `type:` (the original's name, e.g. `AttentionLayer`).
    const NAME: &'static str;
    /// Short aliases also accepted for `type:`.
    const ALIASES: &'static [&'static str];
    /// Fill in what `type: <alias>` implies before the fields are parsed (e.g. `geglu` sets
    /// `activation: gelu`); an error names the field. Default: aliases imply nothing.
    fn apply_alias(
        _alias: &str,
        _fields: &mut serde_json::Map<String, serde_json::Value>,
    ) -> std::result::Result<(), SpecProblem> {
        Ok(())
    }
}

/// A built layer: one forward signature for training, generation and tracing.
pub trait Layer: Send + Sync {
    /// (b, t, d_in) -> (b, t, d_out).
    fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor>;
    /// The KV cache slot of an attention layer. Default: none.
    fn kv_slot(&self) -> Option<usize> {
        None
    }
    /// Whether the layer may close a stack after its blocks (a norm, the head projection), the
    /// tail the self-draft of speculative decoding keeps. Default: false.
    fn is_tail(&self) -> bool {
        false
    }
}
