//! Numbers a plan shows for each model, computed from the specs alone (nothing is built):
//! parameter count and KV-cache bytes per token.
//!
//! Each layer counts its own parameters and cached K/V values ([`LayerSpec`](crate::layer::LayerSpec),
//! in its file under `layer/`, following the built layer exactly); topologies add up their
//! children `repeat` times; the embedding table is vocab·d and a tied head adds nothing.

use serde::{Deserialize, Serialize};

use crate::layer::{EmbedderSpec, LayerSpec};
use crate::model::ModelSpec;
use crate::topology::{NodeSpec, NodeView};

/// Size figures of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStats {
    /// Trainable parameters (embedding table included).
    pub params: u64,
    /// Attention layers, i.e. KV cache slots.
    pub attention_layers: u64,
    /// KV cache bytes per token over all layers, f32 storage.
    pub kv_bytes_per_token_f32: u64,
    /// KV cache bytes per token over all layers, f16/bf16 storage.
    pub kv_bytes_per_token_f16: u64,
}

impl ModelStats {
    /// Figures of a (validated) model spec; saturating, so absurd sizes cannot overflow.
    pub fn of(model: &ModelSpec) -> Self {
        let embed = match &model.embedder {
            EmbedderSpec::Token { vocab_size, d_model } => {
                (*vocab_size as u64).saturating_mul(*d_model as u64)
            }
            EmbedderSpec::None => 0,
        };
        let kv_elems = kv_elements(&model.topology);
        Self {
            params: embed.saturating_add(params(&model.topology)),
            attention_layers: model.topology.attention_count() as u64,
            kv_bytes_per_token_f32: kv_elems.saturating_mul(4),
            kv_bytes_per_token_f16: kv_elems.saturating_mul(2),
        }
    }
}

/// Parameters of `node` and its subtree (children counted `repeat` times).
pub fn params(node: &NodeSpec) -> u64 {
    sum_layers(node, &|l| l.params())
}

/// K and V elements per token in `node`'s attention layers.
fn kv_elements(node: &NodeSpec) -> u64 {
    sum_layers(node, &|l| l.kv_values_per_token())
}

/// Exact cached bytes per token of `node`'s attention layers with K and V stored as `kind`
/// (block scales included; blocks never straddle heads or DBA's sem/geo segments).
pub fn kv_bytes(node: &NodeSpec, kind: crate::cache::CacheKind) -> u64 {
    sum_layers(node, &|l| l.kv_bytes_per_token(kind))
}

/// `per_layer` summed over every layer under `node`, each topology's children counted `repeat`
/// times (saturating). The match lists every topology so that a new one must be placed here.
fn sum_layers(node: &NodeSpec, per_layer: &dyn Fn(&dyn LayerSpec) -> u64) -> u64 {
    match node.view() {
        NodeView::Layer(l) => per_layer(l),
        NodeView::Stacked(_)
        | NodeView::Sequential(_)
        | NodeView::Nested(_)
        | NodeView::Residual(_)
        | NodeView::Parallel(_)
        | NodeView::Branching(_)
        | NodeView::Cyclic(_)
        | NodeView::Recurrent(_) => match node.children() {
            Some((children, repeat)) => children
                .iter()
                .fold(0u64, |acc, c| acc.saturating_add(sum_layers(c, per_layer)))
                .saturating_mul(repeat as u64),
            None => 0,
        },
    }
}
