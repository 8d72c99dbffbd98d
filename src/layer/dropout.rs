//! Dropout (`type: DropoutLayer`): zeroes each element with probability p while training and scales
//! the rest by 1/(1−p); the identity in evaluation. Masks come from the run's seeded RNG.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::spec::{Layer, LayerSpec, LayerType, SpecProblem, Widths};
use crate::model::context::ForwardCtx;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutSpec {
    /// Drop probability in [0, 1). Default: 0.
    #[serde(default)]
    pub p: f64,
}

impl LayerType for DropoutSpec {
    const NAME: &'static str = "DropoutLayer";
    const ALIASES: &'static [&'static str] = &["dropout"];
}

impl LayerSpec for DropoutSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        if (0.0..1.0).contains(&self.p) {
            Vec::new()
        } else {
            vec![SpecProblem::new(
                "p",
                format!("must be in [0, 1) (got {})", self.p),
            )]
        }
    }

    /// Transparent: any width passes through.
    fn widths(&self) -> Option<Widths> {
        None
    }

    fn params(&self) -> u64 {
        0
    }

    fn describe(&self) -> String {
        format!("p={}", self.p)
    }

    fn build(&self, _vb: VarBuilder, _next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Dropout::new(self.p)))
    }
}

impl Layer for Dropout {
    fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        Dropout::forward(self, xs, ctx.train, ctx.rng.as_deref_mut())
    }

    fn is_tail(&self) -> bool {
        true
    }
}

pub struct Dropout {
    p: f64,
}

impl Dropout {
    pub fn new(p: f64) -> Self {
        Self { p }
    }

    pub fn forward(&self, xs: &Tensor, train: bool, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        apply_dropout(xs, self.p, train, rng)
    }
}

/// Shared by every layer with a `dropout_p`.
pub fn apply_dropout(xs: &Tensor, p: f64, train: bool, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
    let (true, Some(rng)) = (train && p > 0.0, rng) else {
        return Ok(xs.clone());
    };
    let scale = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..xs.elem_count())
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
        .collect();
    let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
    xs * mask
}
