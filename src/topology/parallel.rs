//! Parallel topology: every child sees the same x; the outputs (each (b, t, d)) are stacked on a
//! new axis 2 — (b, t, n_branches, d) — and reduced over it (`reduce: sum` or `mean`) back to
//! (b, t, d). All branches must have the same output width.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::{Node, NodeSpec, one};
use crate::model::context::ForwardCtx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduce {
    /// Sum over branches.
    #[default]
    Sum,
    /// Mean over branches.
    Mean,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelSpec {
    pub layers: Vec<NodeSpec>,
    /// Default: 1.
    #[serde(default = "one")]
    pub repeat: usize,
    /// How the stacked branch axis is reduced. Default: sum.
    #[serde(default)]
    pub reduce: Reduce,
}

pub struct Parallel {
    branches: Vec<(String, Node)>,
    reduce: Reduce,
}

impl Parallel {
    pub fn new(branches: Vec<(String, Node)>, reduce: Reduce) -> Self {
        Self { branches, reduce }
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
        let stacked = Tensor::stack(&outs, 2)?; // (b, t, n, d)
        match self.reduce {
            Reduce::Sum => stacked.sum(2),
            Reduce::Mean => stacked.mean(2),
        }
    }
}
