//! Topologies: graph nodes that own children, and the closed enum of every node a manifest can name.
//!
//! A manifest's `topology` is a tree of [`NodeSpec`]s tagged by `type:`. Layers are leaves;
//! topologies hold `layers:` and `repeat:` (expanded by lowering into explicit copies, no weight
//! sharing). See docs/topologies.md for the exact semantics of each.

mod branching;
mod cyclic;
mod node;
mod parallel;
mod residual;
mod sequence;
mod spec_de;

pub use branching::Branching;
pub use cyclic::{Cyclic, CyclicSpec};
pub use node::Node;
pub use parallel::{Parallel, ParallelSpec, Reduce};
pub use residual::Residual;
pub use sequence::Sequence;

use serde::Serialize;

use crate::layer::{AttentionSpec, DropoutSpec, LayerNormSpec, LinearSpec, RmsNormSpec, SwiGluSpec};

/// Children plus a repeat count: the body of Stacked, Sequential, Nested, Residual, Branching and
/// Recurrent topologies.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// Child nodes, in order.
    pub layers: Vec<NodeSpec>,
    /// Build the children this many times in sequence (separate weights). Default: 1.
    #[serde(default = "one")]
    pub repeat: usize,
}

pub(crate) fn one() -> usize {
    1
}

/// Every node type a manifest can name, by its `type:` (the original's names; short aliases too).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum NodeSpec {
    #[serde(rename = "AttentionLayer")]
    Attention(AttentionSpec),
    #[serde(rename = "RMSNormLayer")]
    RmsNorm(RmsNormSpec),
    #[serde(rename = "LayerNormLayer")]
    LayerNorm(LayerNormSpec),
    #[serde(rename = "SwiGLULayer")]
    SwiGlu(SwiGluSpec),
    #[serde(rename = "LinearLayer")]
    Linear(LinearSpec),
    #[serde(rename = "DropoutLayer")]
    Dropout(DropoutSpec),
    #[serde(rename = "StackedTopology")]
    Stacked(TopologySpec),
    #[serde(rename = "SequentialTopology")]
    Sequential(TopologySpec),
    #[serde(rename = "NestedTopology")]
    Nested(TopologySpec),
    #[serde(rename = "ResidualTopology")]
    Residual(TopologySpec),
    #[serde(rename = "ParallelTopology")]
    Parallel(ParallelSpec),
    #[serde(rename = "BranchingTopology")]
    Branching(TopologySpec),
    #[serde(rename = "CyclicTopology")]
    Cyclic(CyclicSpec),
    #[serde(rename = "RecurrentTopology")]
    Recurrent(TopologySpec),
}

/// `(canonical type name, accepted aliases)` for every node type.
pub const NODE_TYPES: &[(&str, &[&str])] = &[
    ("AttentionLayer", &["attention"]),
    ("RMSNormLayer", &["rms_norm", "rmsnorm"]),
    ("LayerNormLayer", &["layer_norm", "layernorm"]),
    ("SwiGLULayer", &["swiglu"]),
    ("LinearLayer", &["linear"]),
    ("DropoutLayer", &["dropout"]),
    ("StackedTopology", &["stacked"]),
    ("SequentialTopology", &["sequential"]),
    ("NestedTopology", &["nested"]),
    ("ResidualTopology", &["residual"]),
    ("ParallelTopology", &["parallel"]),
    ("BranchingTopology", &["branching"]),
    ("CyclicTopology", &["cyclic"]),
    ("RecurrentTopology", &["recurrent"]),
];

impl NodeSpec {
    /// The canonical `type:` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Attention(_) => "AttentionLayer",
            Self::RmsNorm(_) => "RMSNormLayer",
            Self::LayerNorm(_) => "LayerNormLayer",
            Self::SwiGlu(_) => "SwiGLULayer",
            Self::Linear(_) => "LinearLayer",
            Self::Dropout(_) => "DropoutLayer",
            Self::Stacked(_) => "StackedTopology",
            Self::Sequential(_) => "SequentialTopology",
            Self::Nested(_) => "NestedTopology",
            Self::Residual(_) => "ResidualTopology",
            Self::Parallel(_) => "ParallelTopology",
            Self::Branching(_) => "BranchingTopology",
            Self::Cyclic(_) => "CyclicTopology",
            Self::Recurrent(_) => "RecurrentTopology",
        }
    }

    /// Children and repeat count of a topology node; `None` for layers.
    pub fn children(&self) -> Option<(&[NodeSpec], usize)> {
        match self {
            Self::Stacked(t)
            | Self::Sequential(t)
            | Self::Nested(t)
            | Self::Residual(t)
            | Self::Branching(t)
            | Self::Recurrent(t) => Some((&t.layers, t.repeat)),
            Self::Parallel(p) => Some((&p.layers, p.repeat)),
            Self::Cyclic(c) => Some((&c.layers, c.repeat)),
            _ => None,
        }
    }

    /// Mutable children and repeat count of a topology node (for lowering).
    pub fn children_mut(&mut self) -> Option<(&mut Vec<NodeSpec>, &mut usize)> {
        match self {
            Self::Stacked(t)
            | Self::Sequential(t)
            | Self::Nested(t)
            | Self::Residual(t)
            | Self::Branching(t)
            | Self::Recurrent(t) => Some((&mut t.layers, &mut t.repeat)),
            Self::Parallel(p) => Some((&mut p.layers, &mut p.repeat)),
            Self::Cyclic(c) => Some((&mut c.layers, &mut c.repeat)),
            _ => None,
        }
    }

    /// Number of attention layers (KV cache slots) in this subtree, after lowering.
    pub fn attention_count(&self) -> usize {
        match self {
            Self::Attention(_) => 1,
            _ => self
                .children()
                .map_or(0, |(c, r)| r * c.iter().map(Self::attention_count).sum::<usize>()),
        }
    }

    /// All attention specs in execution order (after lowering).
    pub fn attention_specs(&self) -> Vec<&AttentionSpec> {
        let mut out = Vec::new();
        self.collect_attention(&mut out);
        out
    }

    fn collect_attention<'a>(&'a self, out: &mut Vec<&'a AttentionSpec>) {
        match self {
            Self::Attention(a) => out.push(a),
            _ => {
                if let Some((children, repeat)) = self.children() {
                    for _ in 0..repeat {
                        children.iter().for_each(|c| c.collect_attention(out));
                    }
                }
            }
        }
    }
}
