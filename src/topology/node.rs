//! A built node: a layer or a topology, all with `forward(xs, ctx)`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::{Branching, Cyclic, NodeSpec, Parallel, Residual, Sequence};
use crate::layer::{
    Attention, AttentionMode, DecoupledAttention, Dropout, LayerNorm, LinearLayer, RmsNorm, SwiGlu,
};
use crate::model::context::{ForwardCtx, TraceKind};

pub enum Node {
    Attention(Attention),
    Decoupled(DecoupledAttention),
    RmsNorm(RmsNorm),
    LayerNorm(LayerNorm),
    SwiGlu(SwiGlu),
    Linear(LinearLayer),
    Dropout(Dropout),
    /// Stacked, Sequential, Nested and Recurrent: children in order.
    Sequence(Sequence),
    Residual(Residual),
    Parallel(Parallel),
    Branching(Branching),
    Cyclic(Cyclic),
}

impl Node {
    /// Build `spec` (lowered: every `repeat` is 1) with weights under `vb`'s prefix. Attention
    /// layers take consecutive KV cache slots from `next_slot`.
    pub fn build(spec: &NodeSpec, vb: VarBuilder, next_slot: &mut usize) -> Result<Self> {
        let children = |vb: VarBuilder, next_slot: &mut usize| -> Result<Vec<(String, Node)>> {
            let (layers, repeat) = spec.children().expect("topology node has children");
            let mut built = Vec::with_capacity(layers.len() * repeat);
            for (i, child) in std::iter::repeat_n(layers, repeat).flatten().enumerate() {
                let vb = vb.pp("layers").pp(i);
                built.push((vb.prefix(), Node::build(child, vb, next_slot)?));
            }
            Ok(built)
        };
        Ok(match spec {
            NodeSpec::Attention(s) => {
                let slot = *next_slot;
                *next_slot += 1;
                if s.mode == AttentionMode::Decoupled {
                    Node::Decoupled(DecoupledAttention::build(s, slot, vb)?)
                } else {
                    Node::Attention(Attention::build(s, slot, vb)?)
                }
            }
            NodeSpec::RmsNorm(s) => Node::RmsNorm(RmsNorm::build(s, vb)?),
            NodeSpec::LayerNorm(s) => Node::LayerNorm(LayerNorm::build(s, vb)?),
            NodeSpec::SwiGlu(s) => Node::SwiGlu(SwiGlu::build(s, vb)?),
            NodeSpec::Linear(s) => Node::Linear(LinearLayer::build(s, vb)?),
            NodeSpec::Dropout(s) => Node::Dropout(Dropout::new(s.p)),
            NodeSpec::Stacked(_) | NodeSpec::Sequential(_) | NodeSpec::Nested(_) | NodeSpec::Recurrent(_) => {
                Node::Sequence(Sequence::new(children(vb, next_slot)?))
            }
            NodeSpec::Residual(_) => Node::Residual(Residual::new(Sequence::new(children(vb, next_slot)?))),
            NodeSpec::Parallel(p) => Node::Parallel(Parallel::new(children(vb, next_slot)?, p.reduce)),
            NodeSpec::Branching(_) => Node::Branching(Branching::new(children(vb, next_slot)?)),
            NodeSpec::Cyclic(c) => {
                Node::Cyclic(Cyclic::new(Sequence::new(children(vb, next_slot)?), c.iterations))
            }
        })
    }

    pub fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        if ctx.stopped {
            return Ok(xs.clone());
        }
        match self {
            Node::Attention(a) => {
                ctx.record_attention_input(a.slot(), xs);
                a.forward(xs, ctx)
            }
            Node::Decoupled(a) => {
                ctx.record_attention_input(a.slot(), xs);
                a.forward(xs, ctx)
            }
            Node::RmsNorm(n) => n.forward(xs, ctx.train),
            Node::LayerNorm(n) => n.forward(xs),
            Node::SwiGlu(m) => m.forward(xs),
            Node::Linear(l) => l.forward(xs),
            Node::Dropout(d) => d.forward(xs, ctx.train, ctx.rng.as_deref_mut()),
            Node::Sequence(s) => s.forward(xs, ctx),
            Node::Residual(r) => r.forward(xs, ctx),
            Node::Parallel(p) => p.forward(xs, ctx),
            Node::Branching(b) => b.forward(xs, ctx),
            Node::Cyclic(c) => c.forward(xs, ctx),
        }
    }

    /// The attention layer (standard or decoupled) that owns KV slot `slot`, wherever it is nested.
    pub fn attention_at(&self, slot: usize) -> Option<&Node> {
        let children: &[(String, Node)] = match self {
            Node::Attention(a) => return (a.slot() == slot).then_some(self),
            Node::Decoupled(a) => return (a.slot() == slot).then_some(self),
            Node::Sequence(s) => s.children(),
            Node::Residual(r) => r.inner().children(),
            Node::Parallel(p) => p.branches(),
            Node::Branching(b) => b.branches(),
            Node::Cyclic(c) => c.inner().children(),
            Node::RmsNorm(_) | Node::LayerNorm(_) | Node::SwiGlu(_) | Node::Linear(_) | Node::Dropout(_) => {
                return None;
            }
        };
        children.iter().find_map(|(_, n)| n.attention_at(slot))
    }

    /// Forward one child and record its output when a trace asks for every layer.
    pub(crate) fn forward_traced(&self, path: &str, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let ys = self.forward(xs, ctx)?;
        ctx.record(TraceKind::Layer, path, &ys);
        Ok(ys)
    }
}
