//! Residual topology: y = x + F(x), where F is the whole inner sequence (the skip is taken once
//! before the first child and added once after the last). Inner widths must preserve shape.

use candle_core::{Result, Tensor};

use super::Sequence;
use crate::model::context::ForwardCtx;

pub struct Residual {
    inner: Sequence,
}

impl Residual {
    pub fn new(inner: Sequence) -> Self {
        Self { inner }
    }

    pub fn inner(&self) -> &Sequence {
        &self.inner
    }

    pub fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        xs + self.inner.forward(xs, ctx)?
    }
}
