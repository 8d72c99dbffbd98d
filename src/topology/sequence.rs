//! Stacked, Sequential, Nested and Recurrent topologies: x ← f_i(x) for each child in order.
//!
//! They differ only in intent (Nested is "a topology used as a layer", Recurrent marks a stack whose
//! attention layers carry their KV cache across calls — which every attention layer does through
//! the forward context); the computation is the same.

use candle_core::{Result, Tensor};

use super::Node;
use crate::model::context::ForwardCtx;

pub struct Sequence {
    children: Vec<(String, Node)>,
}

impl Sequence {
    pub fn new(children: Vec<(String, Node)>) -> Self {
        Self { children }
    }

    pub fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (path, child) in &self.children {
            xs = child.forward_traced(path, &xs, ctx)?;
        }
        Ok(xs)
    }

    pub fn children(&self) -> &[(String, Node)] {
        &self.children
    }
}
