//! SwiGLU feed-forward (`type: SwiGLULayer`): down(silu(gate(x)) ⊙ up(x)).
//! Shapes: (b, t, d_model) -> (b, t, d_model). Weight names follow HF Llama's `mlp`.

use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};
use serde::{Deserialize, Serialize};

use super::linear::{Projection, projection};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwiGluSpec {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Inner width (Llama: ~8/3 · d_model).
    pub d_ff: usize,
    /// Bias on the three projections. Default: false (the original's docs; its code said true).
    #[serde(default)]
    pub bias: bool,
}

pub struct SwiGlu {
    gate: Projection,
    up: Projection,
    down: Projection,
}

impl SwiGlu {
    /// Weights at `<path>.{gate_proj,up_proj,down_proj}`.
    pub fn build(spec: &SwiGluSpec, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gate: projection(spec.d_model, spec.d_ff, spec.bias, vb.pp("gate_proj"))?,
            up: projection(spec.d_model, spec.d_ff, spec.bias, vb.pp("up_proj"))?,
            down: projection(spec.d_ff, spec.d_model, spec.bias, vb.pp("down_proj"))?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate.forward(xs)?)?;
        self.down.forward(&(gate * self.up.forward(xs)?)?)
    }
}
