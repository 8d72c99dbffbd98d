//! Dropout (`type: DropoutLayer`): zeroes each element with probability p while training and scales
//! the rest by 1/(1−p); the identity in evaluation. Masks come from the run's seeded RNG.

use candle_core::{Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutSpec {
    /// Drop probability in [0, 1). Default: 0.
    #[serde(default)]
    pub p: f64,
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
