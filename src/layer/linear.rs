//! Linear projection (`type: LinearLayer`): y = x·Wᵀ + b. Shapes: (b, t, d_in) -> (b, t, d_out).

use candle_core::{Result, Tensor};
use candle_nn::{Init, Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinearSpec {
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// Add a bias. Default: true.
    #[serde(default = "yes")]
    pub bias: bool,
}

fn yes() -> bool {
    true
}

/// Std of fresh projection weights (GPT-2 / nanoGPT convention).
pub const INIT_STD: f64 = 0.02;

/// Build a linear map `d_in -> d_out` with weights `weight` (d_out, d_in) and optional `bias`.
pub fn linear(d_in: usize, d_out: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints(
        (d_out, d_in),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        },
    )?;
    let b = if bias {
        Some(vb.get_with_hints(d_out, "bias", Init::Const(0.0))?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

pub struct LinearLayer {
    inner: Linear,
}

impl LinearLayer {
    /// Weights at `<path>.weight` / `<path>.bias`.
    pub fn build(spec: &LinearSpec, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            inner: linear(spec.d_in, spec.d_out, spec.bias, vb)?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.inner.forward(xs)
    }
}
