//! RMSNorm (`type: RMSNormLayer`): y = x · rsqrt(mean(x²) + eps) · w, computed in f32.
//! Shapes: (b, t, d) -> (b, t, d).

use candle_core::{DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RmsNormSpec {
    pub d_model: usize,
    /// Default: 1e-5.
    #[serde(default = "eps")]
    pub eps: f64,
    /// Learn a per-feature scale (initialised to ones). Default: true.
    #[serde(default = "yes")]
    pub elementwise_affine: bool,
}

fn eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

pub struct RmsNorm {
    weight: Option<Tensor>,
    eps: f64,
    d_model: usize,
}

impl RmsNorm {
    /// Weight at `<path>.weight` (HF: `input_layernorm.weight`).
    pub fn build(spec: &RmsNormSpec, vb: VarBuilder) -> Result<Self> {
        let weight = if spec.elementwise_affine {
            Some(vb.get_with_hints(spec.d_model, "weight", Init::Const(1.0))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            eps: spec.eps,
            d_model: spec.d_model,
        })
    }

    /// `differentiable` selects the candle-ops path (the fused kernel has no backward).
    pub fn forward(&self, xs: &Tensor, differentiable: bool) -> Result<Tensor> {
        match (&self.weight, differentiable) {
            (Some(w), false) => candle_nn::ops::rms_norm(&xs.contiguous()?, w, self.eps as f32),
            _ => {
                let dtype = xs.dtype();
                let x = xs.to_dtype(DType::F32)?;
                let ms = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
                let y = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?.to_dtype(dtype)?;
                match &self.weight {
                    Some(w) => y.broadcast_mul(w),
                    None => Ok(y),
                }
            }
        }
    }

    pub fn d_model(&self) -> usize {
        self.d_model
    }
}
