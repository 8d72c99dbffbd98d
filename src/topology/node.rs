//! A built node: a layer (built by its spec's [`LayerSpec::build`](crate::layer::LayerSpec)) or a
//! topology, all with `forward(xs, ctx)`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::{Branching, Cyclic, NodeSpec, NodeView, Parallel, Residual, Sequence};
use crate::layer::Layer;
use crate::model::context::{ForwardCtx, TraceKind};

pub enum Node {
    /// Any layer; attention layers report their KV slot through [`Layer::kv_slot`].
    Layer(Box<dyn Layer>),
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
        Ok(match spec.view() {
            NodeView::Layer(l) => Node::Layer(l.build(vb, next_slot)?),
            NodeView::Stacked(_) | NodeView::Sequential(_) | NodeView::Nested(_) | NodeView::Recurrent(_) => {
                Node::Sequence(Sequence::new(children(vb, next_slot)?))
            }
            NodeView::Residual(_) => Node::Residual(Residual::new(Sequence::new(children(vb, next_slot)?))),
            NodeView::Parallel(p) => Node::Parallel(Parallel::new(children(vb, next_slot)?, p.reduce)),
            NodeView::Branching(_) => Node::Branching(Branching::new(children(vb, next_slot)?)),
            NodeView::Cyclic(c) => {
                Node::Cyclic(Cyclic::new(Sequence::new(children(vb, next_slot)?), c.iterations))
            }
        })
    }

    pub fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        if ctx.stopped {
            return Ok(xs.clone());
        }
        match self {
            Node::Layer(l) => {
                if let Some(slot) = l.kv_slot() {
                    ctx.record_attention_input(slot, xs);
                }
                l.forward(xs, ctx)
            }
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
            Node::Layer(l) => return (l.kv_slot() == Some(slot)).then_some(self),
            Node::Sequence(s) => s.children(),
            Node::Residual(r) => r.inner().children(),
            Node::Parallel(p) => p.branches(),
            Node::Branching(b) => b.branches(),
            Node::Cyclic(c) => c.inner().children(),
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
