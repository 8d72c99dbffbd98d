//! LayerNorm (`type: LayerNormLayer`): (x − mean) / sqrt(var + eps) · w + b, in f32.
//! Shapes: (b, t, d) -> (b, t, d).

use candle_core::{D, DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use super::spec::{Layer, LayerSpec, LayerType, SpecProblem, Widths, check_dim, check_eps};
use crate::model::context::ForwardCtx;

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

impl LayerType for LayerNormSpec {
    const NAME: &'static str = "LayerNormLayer";
    const ALIASES: &'static [&'static str] = &["layer_norm", "layernorm"];
}

impl LayerSpec for LayerNormSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        check_dim(&mut out, "d_model", self.d_model);
        check_eps(&mut out, "eps", self.eps);
        out
    }

    fn widths(&self) -> Option<Widths> {
        Some(Widths::preserving("d_model", self.d_model))
    }

    /// Weight and bias: 2d.
    fn params(&self) -> u64 {
        2 * self.d_model as u64
    }

    fn describe(&self) -> String {
        format!("d_model={} eps={}", self.d_model, self.eps)
    }

    fn build(&self, vb: VarBuilder, _next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        Ok(Box::new(LayerNorm::build(self, vb)?))
    }
}

impl Layer for LayerNorm {
    fn forward(&self, xs: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        LayerNorm::forward(self, xs)
    }

    fn is_tail(&self) -> bool {
        true
    }
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
