//! Numbers a plan shows for each model, computed from the specs alone (nothing is built):
//! parameter count and KV-cache bytes per token.
//!
//! Parameters follow the built layers exactly (see `layer/*`): attention q/k/v/o projections
//! (d·n_heads·head_dim + 2·d·n_kv_heads·head_dim + n_heads·head_dim·d, plus biases), RMSNorm d
//! (when affine), LayerNorm 2d, SwiGLU 3·d·d_ff (+ biases), Linear d_in·d_out (+ d_out), the
//! embedding table vocab·d; a tied head adds nothing. KV cache per token and attention layer:
//! 2 (K and V) · n_kv_heads · head_dim · bytes per element.

use serde::{Deserialize, Serialize};

use crate::layer::EmbedderSpec;
use crate::model::ModelSpec;
use crate::topology::NodeSpec;

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

fn mul(a: usize, b: usize) -> u64 {
    (a as u64).saturating_mul(b as u64)
}

/// Parameters of `node` and its subtree (children counted `repeat` times).
pub fn params(node: &NodeSpec) -> u64 {
    match node {
        NodeSpec::Attention(a) if a.mode == crate::layer::AttentionMode::Decoupled => {
            let dims = crate::layer::DecoupledDims::of(a);
            let (d, nh, nkv) = (a.d_model, dims.n_heads, dims.n_kv_heads);
            let (sh, gh, vh) = (dims.sem_head_dim, dims.geo_head_dim, dims.v_head_dim);
            let k_sem = if a.tie_qk { 0 } else { nkv * sh };
            let outs = nh * sh + k_sem + nh * gh + nkv * gh + nkv * vh;
            let mut n = mul(d, outs).saturating_add(mul(nh * vh, d));
            if a.bias {
                n = n.saturating_add((outs + d) as u64);
            }
            if a.decoupled_gate {
                n = n.saturating_add(nh as u64);
                if a.decoupled_gate_dynamic {
                    n = n.saturating_add(mul(d, nh));
                }
            }
            if a.null_attn {
                n = n.saturating_add((nkv * (sh + gh + vh)) as u64);
            }
            n
        }
        NodeSpec::Attention(a) => {
            let (d, q, kv) = (a.d_model, a.n_heads * a.head_dim(), a.kv_heads() * a.head_dim());
            let weights = mul(d, q)
                .saturating_add(mul(d, kv).saturating_mul(2))
                .saturating_add(mul(q, d));
            let bias = if a.bias { (q + 2 * kv + d) as u64 } else { 0 };
            weights.saturating_add(bias)
        }
        NodeSpec::RmsNorm(n) => {
            if n.elementwise_affine {
                n.d_model as u64
            } else {
                0
            }
        }
        NodeSpec::LayerNorm(n) => 2 * n.d_model as u64,
        NodeSpec::SwiGlu(s) => {
            let bias = if s.bias {
                (2 * s.d_ff + s.d_model) as u64
            } else {
                0
            };
            mul(s.d_model, s.d_ff).saturating_mul(3).saturating_add(bias)
        }
        NodeSpec::Linear(l) => mul(l.d_in, l.d_out).saturating_add(if l.bias { l.d_out as u64 } else { 0 }),
        NodeSpec::Dropout(_) => 0,
        _ => subtree(node, params),
    }
}

/// K and V elements per token in `node`'s attention layers.
fn kv_elements(node: &NodeSpec) -> u64 {
    match node {
        NodeSpec::Attention(a) => a.cache_values_per_token() as u64,
        _ => subtree(node, kv_elements),
    }
}

/// Exact cached bytes per token of `node`'s attention layers with K and V stored as `kind`
/// (block scales included; blocks never straddle heads or DBA's sem/geo segments).
pub fn kv_bytes(node: &NodeSpec, kind: crate::cache::CacheKind) -> u64 {
    match node {
        NodeSpec::Attention(a) => {
            let kv = a.kv_heads();
            let bytes = match a.mode {
                crate::layer::AttentionMode::Decoupled => {
                    let d = crate::layer::DecoupledDims::of(a);
                    kv * (kind.row_bytes(d.sem_head_dim)
                        + kind.row_bytes(d.geo_head_dim)
                        + kind.row_bytes(d.v_head_dim))
                }
                _ => 2 * kv * kind.row_bytes(a.head_dim()),
            };
            bytes as u64
        }
        NodeSpec::Stacked(_)
        | NodeSpec::Sequential(_)
        | NodeSpec::Nested(_)
        | NodeSpec::Residual(_)
        | NodeSpec::Parallel(_)
        | NodeSpec::Branching(_)
        | NodeSpec::Cyclic(_)
        | NodeSpec::Recurrent(_) => match node.children() {
            Some((children, repeat)) => {
                (repeat as u64).saturating_mul(children.iter().map(|c| kv_bytes(c, kind)).sum::<u64>())
            }
            None => 0,
        },
        _ => 0,
    }
}

fn subtree(node: &NodeSpec, f: fn(&NodeSpec) -> u64) -> u64 {
    match node.children() {
        Some((children, repeat)) => children
            .iter()
            .fold(0u64, |acc, c| acc.saturating_add(f(c)))
            .saturating_mul(repeat as u64),
        None => 0,
    }
}
