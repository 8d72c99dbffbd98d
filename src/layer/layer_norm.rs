//! LayerNorm (`type: LayerNormLayer`): (x − mean) / sqrt(var + eps) · w + b, in f32.
//! Shapes: (b, t, d) -> (b, t, d).

use candle_core::{D, DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LayerNormSpec {
    pub d_model: usize,
    /// Default: 1e-5.
    #[serde(default = "eps")]
    pub eps: f64,
}

fn eps() -> f64 {
    1e-5
}

pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn build(spec: &LayerNormSpec, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(spec.d_model, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(spec.d_model, "bias", Init::Const(0.0))?,
            eps: spec.eps,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        let x = xs.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let y = centered
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?;
        y.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}
