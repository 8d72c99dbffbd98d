//! The language-model wrapper: embed → topology → logits.
//!
//! With `tied_embeddings`, a topology that ends at `d_model` features is projected onto the
//! vocabulary through the embedding table (features · Eᵀ); a topology that already ends at
//! `vocab_size` features is used as it is. Shapes: ids (b, t) u32 -> logits (b, t, vocab).

use candle_core::{D, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::context::ForwardCtx;
use crate::layer::{Embedder, EmbedderSpec};
use crate::topology::{Node, NodeSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum ModelKind {
    /// A decoder-only transformer language model.
    #[default]
    TransformerModel,
    /// Same as TransformerModel (the original's GPT name).
    GPTModel,
    /// A feature row → class logits (`system: mlp_classifier`); no token embedder.
    MLPModel,
    /// An image → class logits through patches (`system: vit`); no token embedder.
    ViTModel,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// `TransformerModel` or `GPTModel`. Default: TransformerModel.
    #[serde(rename = "type", default)]
    pub kind: ModelKind,
    /// Token embedder, or `{type: none}` for a topology that reads features. Default: none.
    #[serde(default)]
    pub embedder: EmbedderSpec,
    /// The graph of layers.
    pub topology: NodeSpec,
    /// Project `d_model` features onto the vocabulary with the embedding table. Default: true.
    #[serde(default = "yes")]
    pub tied_embeddings: bool,
}

fn yes() -> bool {
    true
}

pub struct LanguageModel {
    embedder: Option<Embedder>,
    topology: Node,
    tied: bool,
    vocab_size: Option<usize>,
    n_slots: usize,
}

impl LanguageModel {
    /// Build from a lowered spec. Weights: `embedder.weight`, `topology.…`.
    pub fn build(spec: &ModelSpec, vb: VarBuilder) -> Result<Self> {
        let (embedder, vocab_size) = match &spec.embedder {
            EmbedderSpec::Token { vocab_size, d_model } => (
                Some(Embedder::build(*vocab_size, *d_model, vb.pp("embedder"))?),
                Some(*vocab_size),
            ),
            EmbedderSpec::None => (None, None),
        };
        let mut n_slots = 0;
        let topology = Node::build(&spec.topology, vb.pp("topology"), &mut n_slots)?;
        Ok(Self {
            embedder,
            topology,
            tied: spec.tied_embeddings,
            vocab_size,
            n_slots,
        })
    }

    /// Number of attention layers (KV cache slots).
    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    pub fn vocab_size(&self) -> Option<usize> {
        self.vocab_size
    }

    /// Token ids (b, t) → logits (b, t, vocab).
    pub fn forward(&self, ids: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let xs = self.embed(ids)?;
        self.forward_features(&xs, ctx)
    }

    /// Token ids (b, t) → the topology's output (b, t, d) before the output head. With
    /// [`Self::logits`] this lets a caller project only the positions it needs (generation
    /// projects the last one).
    pub fn forward_hidden(&self, ids: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let xs = self.embed(ids)?;
        self.topology.forward(&xs, ctx)
    }

    /// How many leading children of the top-level stack are blocks (everything before the trailing
    /// norms / head projection); `None` when the topology is not a stack or has no such tail.
    pub fn n_blocks(&self) -> Option<usize> {
        let Node::Sequence(s) = &self.topology else {
            return None;
        };
        let tail = s
            .children()
            .iter()
            .rev()
            .take_while(|(_, n)| is_head_node(n))
            .count();
        (tail > 0).then(|| s.children().len() - tail)
    }

    /// Token ids (b, t) → the output (b, t, d) of the first `n_blocks` blocks followed by the
    /// stack's tail (final norm, head projection): the self-draft of speculative decoding, which
    /// shares every weight (and the KV slots of those blocks) with the full model.
    pub fn forward_hidden_blocks(
        &self,
        ids: &Tensor,
        ctx: &mut ForwardCtx,
        n_blocks: usize,
    ) -> Result<Tensor> {
        let total = self.n_blocks().ok_or_else(|| {
            candle_core::Error::Msg("the topology is not a stack of blocks ending in a norm".into())
        })?;
        if n_blocks == 0 || n_blocks > total {
            candle_core::bail!("cannot keep {n_blocks} blocks of a model with {total}");
        }
        let Node::Sequence(s) = &self.topology else {
            candle_core::bail!("the topology is not a stack")
        };
        let mut xs = self.embed(ids)?;
        let children = s.children();
        for (path, child) in children[..n_blocks].iter().chain(&children[total..]) {
            xs = child.forward_traced(path, &xs, ctx)?;
        }
        Ok(xs)
    }

    /// The attention layer that owns KV slot `slot` (blockwise distillation runs it alone).
    pub fn attention_at(&self, slot: usize) -> Option<&Node> {
        self.topology.attention_at(slot)
    }

    /// Token ids (b, t) → embeddings (b, t, d_model).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        match &self.embedder {
            Some(e) => e.forward(ids),
            None => candle_core::bail!("this model has no token embedder; call forward_features"),
        }
    }

    /// Features (b, t, d) → logits (b, t, vocab) (or the topology's output without an embedder).
    pub fn forward_features(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let ys = self.topology.forward(xs, ctx)?;
        if ctx.stopped {
            // why: a truncated pass (blockwise distillation) only wants its traced outputs.
            return Ok(ys);
        }
        self.logits(&ys)
    }

    /// The output head on the topology's output (b, t, width): identity when the width is already
    /// `vocab_size`, the tied embedding table when it is `d_model`.
    pub fn logits(&self, ys: &Tensor) -> Result<Tensor> {
        let (Some(e), Some(vocab)) = (&self.embedder, self.vocab_size) else {
            return Ok(ys.clone());
        };
        let width = ys.dim(D::Minus1)?;
        if width == vocab {
            Ok(ys.clone())
        } else if self.tied && width == e.d_model() {
            e.tied_logits(ys)
        } else {
            candle_core::bail!(
                "the topology ends with {width} features: expected vocab_size ({vocab}){}",
                if self.tied {
                    " or d_model (tied embeddings)"
                } else {
                    ""
                }
            )
        }
    }
}

/// Leaves that may end a stack after its blocks: norms and the head projection.
fn is_head_node(node: &Node) -> bool {
    match node {
        Node::Layer(l) => l.is_tail(),
        Node::Sequence(_) | Node::Residual(_) | Node::Parallel(_) | Node::Branching(_) | Node::Cyclic(_) => {
            false
        }
    }
}
