//! SwiGLU feed-forward (`type: SwiGLULayer`): down(silu(gate(x)) ⊙ up(x)); `GLULayer` with
//! `activation: silu` (alias `swiglu`) is the same function.
//! Shapes: (b, t, d_model) -> (b, t, d_model). Weight names follow HF Llama's `mlp`.

use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};
use serde::{Deserialize, Serialize};

use super::linear::{Projection, projection};
use super::spec::{Layer, LayerSpec, LayerType, SpecProblem, Widths, check_dim};
use crate::model::context::ForwardCtx;

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

impl LayerType for SwiGluSpec {
    const NAME: &'static str = "SwiGLULayer";
    /// `swiglu` names the GLU family's silu member (`GLULayer`), the same function and weights.
    const ALIASES: &'static [&'static str] = &[];
}

impl LayerSpec for SwiGluSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        check_dim(&mut out, "d_model", self.d_model);
        check_dim(&mut out, "d_ff", self.d_ff);
        out
    }

    fn widths(&self) -> Option<Widths> {
        Some(Widths::preserving("d_model", self.d_model))
    }

    /// 3·d·d_ff (+ 2·d_ff + d biases).
    fn params(&self) -> u64 {
        super::glu::glu_params(self.d_model, self.d_ff, self.bias)
    }

    fn describe(&self) -> String {
        format!(
            "d_model={} d_ff={}{}",
            self.d_model,
            self.d_ff,
            if self.bias { " bias=true" } else { "" }
        )
    }

    fn build(&self, vb: VarBuilder, _next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        Ok(Box::new(SwiGlu::build(self, vb)?))
    }
}

impl Layer for SwiGlu {
    fn forward(&self, xs: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        SwiGlu::forward(self, xs)
    }
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
        let h = crate::ops::swiglu::silu_mul(&self.gate.forward(xs)?, &self.up.forward(xs)?)?;
        self.down.forward(&h)
    }
}
