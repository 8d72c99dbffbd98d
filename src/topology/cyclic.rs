//! Cyclic topology: the inner sequence is applied `iterations` times with the same weights
//! (x ← F(x), a weight-tied loop). Its children must preserve shape when `iterations > 1`.
//! Attention layers inside a loop are not cacheable across iterations, so a Cyclic topology with
//! attention and `iterations > 1` is rejected for cached decoding.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::{NodeSpec, Sequence, one};
use crate::model::context::ForwardCtx;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CyclicSpec {
    pub layers: Vec<NodeSpec>,
    /// Default: 1.
    #[serde(default = "one")]
    pub repeat: usize,
    /// Passes through the (shared) inner sequence. Default: 1.
    #[serde(default = "one")]
    pub iterations: usize,
}

pub struct Cyclic {
    inner: Sequence,
    iterations: usize,
}

impl Cyclic {
    pub fn new(inner: Sequence, iterations: usize) -> Self {
        Self { inner, iterations }
    }

    pub fn inner(&self) -> &Sequence {
        &self.inner
    }

    pub fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        if self.iterations > 1 && ctx.cache.is_some() {
            candle_core::bail!("a CyclicTopology with iterations > 1 cannot decode with a KV cache");
        }
        let mut xs = xs.clone();
        for _ in 0..self.iterations {
            xs = self.inner.forward(&xs, ctx)?;
        }
        Ok(xs)
    }
}
