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
pub use spec_de::PATH_SEP;
pub(crate) use spec_de::parse as parse_strict;

use serde::Serialize;

use crate::layer::{
    AttentionSpec, DropoutSpec, LayerNormSpec, LayerSpec, LayerType, LinearSpec, RmsNormSpec, SwiGluSpec,
};

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

/// Declares [`NodeSpec`] from the table of layers below: its variants, [`NODE_TYPES`],
/// `type_name`, the `type:` dispatch of the deserializer, serialization and [`NodeSpec::view`].
/// Everything else a layer needs lives in its own file (its [`LayerType`] and [`LayerSpec`] impls).
macro_rules! node_spec {
    ($($variant:ident($spec:ty),)*) => {
        /// Every node type a manifest can name, by its `type:` (the original's names; short aliases too).
        #[derive(Debug, Clone, PartialEq)]
        pub enum NodeSpec {
            $($variant($spec),)*
            Stacked(TopologySpec),
            Sequential(TopologySpec),
            Nested(TopologySpec),
            Residual(TopologySpec),
            Parallel(ParallelSpec),
            Branching(TopologySpec),
            Cyclic(CyclicSpec),
            Recurrent(TopologySpec),
        }

        /// `(canonical type name, accepted aliases)` for every node type.
        pub const NODE_TYPES: &[(&str, &[&str])] = &[
            $((<$spec as LayerType>::NAME, <$spec as LayerType>::ALIASES),)*
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
                    $(Self::$variant(_) => <$spec as LayerType>::NAME,)*
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

            /// Mutable children and repeat count of a topology node (for lowering).
            pub fn children_mut(&mut self) -> Option<(&mut Vec<NodeSpec>, &mut usize)> {
                match self {
                    $(Self::$variant(_) => None,)*
                    Self::Stacked(t)
                    | Self::Sequential(t)
                    | Self::Nested(t)
                    | Self::Residual(t)
                    | Self::Branching(t)
                    | Self::Recurrent(t) => Some((&mut t.layers, &mut t.repeat)),
                    Self::Parallel(p) => Some((&mut p.layers, &mut p.repeat)),
                    Self::Cyclic(c) => Some((&mut c.layers, &mut c.repeat)),
                }
            }

            /// What this node is, with every layer seen through its [`LayerSpec`].
            pub fn view(&self) -> NodeView<'_> {
                match self {
                    $(Self::$variant(s) => NodeView::Layer(s),)*
                    Self::Stacked(t) => NodeView::Stacked(t),
                    Self::Sequential(t) => NodeView::Sequential(t),
                    Self::Nested(t) => NodeView::Nested(t),
                    Self::Residual(t) => NodeView::Residual(t),
                    Self::Parallel(p) => NodeView::Parallel(p),
                    Self::Branching(t) => NodeView::Branching(t),
                    Self::Cyclic(c) => NodeView::Cyclic(c),
                    Self::Recurrent(t) => NodeView::Recurrent(t),
                }
            }

            /// Parse a layer's mapping (without `type`) written as `type: ty`, whose canonical
            /// name is `canonical`; the mapping back when `canonical` is not a layer.
            pub(crate) fn parse_layer<E: serde::de::Error>(
                canonical: &str,
                ty: &str,
                mut value: serde_json::Value,
            ) -> Result<Result<Self, E>, serde_json::Value> {
                $(if canonical == <$spec as LayerType>::NAME {
                    return Ok((move || -> Result<Self, E> {
                        if let Some(map) = value.as_object_mut() {
                            <$spec as LayerType>::apply_alias(ty, map)
                                .map_err(|p| E::custom(format!("{}{PATH_SEP}{}", p.field, p.message)))?;
                        }
                        Ok(Self::$variant(spec_de::parse::<$spec, E>(value)?))
                    })());
                })*
                Err(value)
            }
        }

        impl Serialize for NodeSpec {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                /// `{type: NAME, ...fields}`, as `#[serde(tag = "type")]` writes it.
                #[derive(Serialize)]
                struct Tagged<'a, T: Serialize> {
                    #[serde(rename = "type")]
                    ty: &'static str,
                    #[serde(flatten)]
                    body: &'a T,
                }
                let ty = self.type_name();
                match self {
                    $(Self::$variant(body) => Tagged { ty, body }.serialize(s),)*
                    Self::Stacked(body)
                    | Self::Sequential(body)
                    | Self::Nested(body)
                    | Self::Residual(body)
                    | Self::Branching(body)
                    | Self::Recurrent(body) => Tagged { ty, body }.serialize(s),
                    Self::Parallel(body) => Tagged { ty, body }.serialize(s),
                    Self::Cyclic(body) => Tagged { ty, body }.serialize(s),
                }
            }
        }
    };
}

// The layers a manifest can name: one line each (the variant and its spec, which lives in
// `src/layer/<name>.rs` with its names, problems, widths, sizes and description).
node_spec! {
    Attention(AttentionSpec),
    RmsNorm(RmsNormSpec),
    LayerNorm(LayerNormSpec),
    SwiGlu(SwiGluSpec),
    Linear(LinearSpec),
    Dropout(DropoutSpec),
    Glu(crate::layer::GluSpec),
    Moe(crate::layer::MoeSpec),
    Activation(crate::layer::ActivationSpec),
    PatchEmbed(crate::layer::PatchEmbedSpec),
    Pool(crate::layer::PoolSpec),
    Ssm(crate::layer::SsmSpec),
    Lora(crate::layer::LoraSpec),
    Rope(crate::layer::RopeSpec),
}

/// A [`NodeSpec`] seen by what it is: a layer (through its [`LayerSpec`]) or one of the topologies.
/// Matches on it are exhaustive, so a new topology is listed by the compiler wherever it matters.
#[derive(Clone, Copy)]
pub enum NodeView<'a> {
    Layer(&'a dyn LayerSpec),
    Stacked(&'a TopologySpec),
    Sequential(&'a TopologySpec),
    Nested(&'a TopologySpec),
    Residual(&'a TopologySpec),
    Parallel(&'a ParallelSpec),
    Branching(&'a TopologySpec),
    Cyclic(&'a CyclicSpec),
    Recurrent(&'a TopologySpec),
}

impl NodeSpec {
    /// The layer spec of a leaf; `None` for topologies.
    pub fn layer(&self) -> Option<&dyn LayerSpec> {
        match self.view() {
            NodeView::Layer(l) => Some(l),
            NodeView::Stacked(_)
            | NodeView::Sequential(_)
            | NodeView::Nested(_)
            | NodeView::Residual(_)
            | NodeView::Parallel(_)
            | NodeView::Branching(_)
            | NodeView::Cyclic(_)
            | NodeView::Recurrent(_) => None,
        }
    }

    /// Children and repeat count of a topology node; `None` for layers.
    pub fn children(&self) -> Option<(&[NodeSpec], usize)> {
        match self.view() {
            NodeView::Layer(_) => None,
            NodeView::Stacked(t)
            | NodeView::Sequential(t)
            | NodeView::Nested(t)
            | NodeView::Residual(t)
            | NodeView::Branching(t)
            | NodeView::Recurrent(t) => Some((&t.layers, t.repeat)),
            NodeView::Parallel(p) => Some((&p.layers, p.repeat)),
            NodeView::Cyclic(c) => Some((&c.layers, c.repeat)),
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
