//! Branching topology: every child sees the same x; the outputs are concatenated on the feature
//! axis (the last one): widths 256 + 256 give 512. (The original concatenated on the batch axis
//! by mistake.)

use candle_core::{D, Result, Tensor};

use super::Node;
use crate::model::context::ForwardCtx;

pub struct Branching {
    branches: Vec<(String, Node)>,
}

impl Branching {
    pub fn new(branches: Vec<(String, Node)>) -> Self {
        Self { branches }
    }

    pub fn branches(&self) -> &[(String, Node)] {
        &self.branches
    }

    pub fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let outs = self
            .branches
            .iter()
            .map(|(path, b)| b.forward_traced(path, xs, ctx))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&outs, D::Minus1)
    }
}
