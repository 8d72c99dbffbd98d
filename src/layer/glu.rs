//! The GLU family of feed-forward layers (`type: GLULayer`; aliases `glu`, `geglu`, `reglu`,
//! `swiglu`): down(act(gate(x)) ⊙ up(x)) — Shazeer, "GLU Variants Improve Transformer" (2020).
//!
//! `activation` picks the member: `sigmoid` (GLU, Dauphin et al. 2016; the default), `gelu`
//! (GEGLU, exact erf form as PyTorch's `F.gelu`), `relu` (ReGLU), `silu` (SwiGLU, the same function
//! and weight names as `SwiGLULayer`). The alias `geglu`/`reglu`/`swiglu` implies its activation;
//! writing a different `activation:` beside it is an error. No cache: decoding is the same forward.
//! Shapes: (b, t, d_model) -> (b, t, d_model). Weight names follow HF Llama's `mlp`.

use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};
use serde::{Deserialize, Serialize};

use super::linear::{Projection, projection};
use super::spec::{Layer, LayerSpec, LayerType, SpecProblem, Widths, check_dim};
use crate::model::context::ForwardCtx;

/// The gate's nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GluActivation {
    /// x·σ(x) — SwiGLU.
    Silu,
    /// x·Φ(x), the exact (erf) GELU — GEGLU.
    Gelu,
    /// max(x, 0) — ReGLU.
    Relu,
    /// σ(x) — the original GLU.
    #[default]
    Sigmoid,
}

impl GluActivation {
    /// The manifest spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Silu => "silu",
            Self::Gelu => "gelu",
            Self::Relu => "relu",
            Self::Sigmoid => "sigmoid",
        }
    }

    /// Apply elementwise (differentiable: candle has the backward of each).
    pub fn apply(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Silu => candle_nn::ops::silu(xs),
            Self::Gelu => xs.gelu_erf(),
            Self::Relu => xs.relu(),
            Self::Sigmoid => candle_nn::ops::sigmoid(xs),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GluSpec {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Inner width of the gate and up projections (Llama: ~8/3 · d_model).
    pub d_ff: usize,
    /// `silu`, `gelu`, `relu` or `sigmoid`. Default: sigmoid (or what the alias implies).
    #[serde(default)]
    pub activation: GluActivation,
    /// Bias on the three projections. Default: false.
    #[serde(default)]
    pub bias: bool,
}

/// Parameters of a gated feed-forward: 3·d·d_ff (+ 2·d_ff + d biases).
pub fn glu_params(d_model: usize, d_ff: usize, bias: bool) -> u64 {
    let bias = if bias { (2 * d_ff + d_model) as u64 } else { 0 };
    (d_model as u64)
        .saturating_mul(d_ff as u64)
        .saturating_mul(3)
        .saturating_add(bias)
}

impl LayerType for GluSpec {
    const NAME: &'static str = "GLULayer";
    const ALIASES: &'static [&'static str] = &["glu", "geglu", "reglu", "swiglu"];

    fn apply_alias(
        alias: &str,
        fields: &mut serde_json::Map<String, serde_json::Value>,
    ) -> std::result::Result<(), SpecProblem> {
        let implied = match alias {
            "geglu" => GluActivation::Gelu,
            "reglu" => GluActivation::Relu,
            "swiglu" => GluActivation::Silu,
            _ => return Ok(()),
        };
        match fields.get("activation") {
            None => {
                fields.insert("activation".into(), implied.name().into());
                Ok(())
            }
            Some(v) if v.as_str() == Some(implied.name()) => Ok(()),
            Some(v) => Err(SpecProblem::new(
                "activation",
                format!(
                    "`type: {alias}` means activation {}, but the layer says {v}",
                    implied.name()
                ),
            )),
        }
    }
}

impl LayerSpec for GluSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        check_dim(&mut out, "d_model", self.d_model);
        if !check_dim(&mut out, "d_ff", self.d_ff)
            && let Some(p) = out.last_mut()
        {
            p.help = Some(format!(
                "the inner width of the gate and up projections, e.g. d_ff: {} (4 · d_model)",
                self.d_model.saturating_mul(4)
            ));
        }
        out
    }

    fn widths(&self) -> Option<Widths> {
        Some(Widths::preserving("d_model", self.d_model))
    }

    fn params(&self) -> u64 {
        glu_params(self.d_model, self.d_ff, self.bias)
    }

    fn describe(&self) -> String {
        format!(
            "d_model={} d_ff={} activation={}{}",
            self.d_model,
            self.d_ff,
            self.activation.name(),
            if self.bias { " bias=true" } else { "" }
        )
    }

    fn build(&self, vb: VarBuilder, _next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Glu::build(self, vb)?))
    }
}

pub struct Glu {
    gate: Projection,
    up: Projection,
    down: Projection,
    activation: GluActivation,
}

impl Glu {
    /// Weights at `<path>.{gate_proj,up_proj,down_proj}`.
    pub fn build(spec: &GluSpec, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gate: projection(spec.d_model, spec.d_ff, spec.bias, vb.pp("gate_proj"))?,
            up: projection(spec.d_model, spec.d_ff, spec.bias, vb.pp("up_proj"))?,
            down: projection(spec.d_ff, spec.d_model, spec.bias, vb.pp("down_proj"))?,
            activation: spec.activation,
        })
    }

    /// (b, t, d_model) -> (b, t, d_model).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (gate, up) = (self.gate.forward(xs)?, self.up.forward(xs)?);
        let h = match self.activation {
            // why: one fused op (and one GPU kernel each way) instead of silu, the product and
            // their autograd passes; the same function.
            GluActivation::Silu => crate::ops::swiglu::silu_mul(&gate, &up)?,
            act => (act.apply(&gate)? * up)?,
        };
        self.down.forward(&h)
    }
}

impl Layer for Glu {
    fn forward(&self, xs: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        Glu::forward(self, xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{SwiGlu, SwiGluSpec};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn scalar_act(a: GluActivation, x: f64) -> f64 {
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        match a {
            GluActivation::Silu => x * sigmoid(x),
            GluActivation::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            GluActivation::Relu => x.max(0.0),
            GluActivation::Sigmoid => sigmoid(x),
        }
    }

    /// erf(x) = 2/√π ∫₀ˣ e^(−t²) dt by Simpson's rule (error far below f32 precision).
    fn erf(x: f64) -> f64 {
        let n = 2000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut sum = f(0.0) + f(x);
        for i in 1..n {
            sum += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        sum * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn rows(t: &Tensor) -> Vec<Vec<f64>> {
        t.to_dtype(DType::F64)
            .and_then(|t| t.to_vec2::<f64>())
            .expect("2-d tensor")
    }

    /// A GLU with random weights and biases, N(0, 0.5²) so the gate spans each activation's bends.
    fn random_glu(activation: GluActivation, d: usize, f: usize) -> (Glu, VarMap) {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let spec = GluSpec {
            d_model: d,
            d_ff: f,
            activation,
            bias: true,
        };
        let glu = Glu::build(&spec, vb).expect("build");
        // why: fresh biases are zeros and fresh weights small; the reference should see neither.
        for var in map.all_vars() {
            let r = Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu).expect("randn");
            var.set(&r).expect("set");
        }
        (glu, map)
    }

    fn get(map: &VarMap, name: &str) -> Vec<Vec<f64>> {
        let data = map.data().lock().expect("lock");
        let t = data[name].as_tensor();
        if t.rank() == 1 {
            vec![rows(&t.unsqueeze(0).expect("unsqueeze"))[0].clone()]
        } else {
            rows(t)
        }
    }

    /// y = W·x + b by hand.
    fn affine(w: &[Vec<f64>], b: &[f64], x: &[f64]) -> Vec<f64> {
        w.iter()
            .zip(b)
            .map(|(row, bi)| row.iter().zip(x).map(|(a, c)| a * c).sum::<f64>() + bi)
            .collect()
    }

    #[test]
    fn forward_matches_a_hand_computed_reference_for_each_activation() -> Result<()> {
        let (d, f, n) = (6, 10, 5);
        for act in [
            GluActivation::Silu,
            GluActivation::Gelu,
            GluActivation::Relu,
            GluActivation::Sigmoid,
        ] {
            let (glu, map) = random_glu(act, d, f);
            let xs = Tensor::randn(0f32, 1.0, (1, n, d), &Device::Cpu)?;
            let ys = rows(&glu.forward(&xs)?.squeeze(0)?);
            let (wg, bg) = (get(&map, "gate_proj.weight"), get(&map, "gate_proj.bias"));
            let (wu, bu) = (get(&map, "up_proj.weight"), get(&map, "up_proj.bias"));
            let (wd, bd) = (get(&map, "down_proj.weight"), get(&map, "down_proj.bias"));
            let mut worst = 0f64;
            for (x, y) in rows(&xs.squeeze(0)?).iter().zip(&ys) {
                let g = affine(&wg, &bg[0], x);
                let u = affine(&wu, &bu[0], x);
                let h: Vec<f64> = g.iter().zip(&u).map(|(g, u)| scalar_act(act, *g) * u).collect();
                let want = affine(&wd, &bd[0], &h);
                for (a, b) in want.iter().zip(y) {
                    worst = worst.max((a - b).abs());
                }
            }
            assert!(worst < 1e-4, "{}: worst |Δ| = {worst}", act.name());
        }
        Ok(())
    }

    #[test]
    fn silu_glu_equals_swiglu_with_the_same_weights() -> Result<()> {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let swiglu = SwiGlu::build(
            &SwiGluSpec {
                d_model: 8,
                d_ff: 12,
                bias: false,
            },
            vb.clone(),
        )?;
        // `type: swiglu` is a GLULayer with activation silu.
        let spec: GluSpec = {
            let mut fields = serde_json::json!({"d_model": 8, "d_ff": 12});
            let map = fields.as_object_mut().expect("object");
            GluSpec::apply_alias("swiglu", map).expect("no conflict");
            serde_json::from_value(fields).expect("valid")
        };
        assert_eq!(spec.activation, GluActivation::Silu);
        let glu = Glu::build(&spec, vb)?; // the same VarMap: the same weights
        let xs = Tensor::randn(0f32, 1.0, (2, 3, 8), &Device::Cpu)?;
        let diff = (glu.forward(&xs)? - swiglu.forward(&xs)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }

    #[test]
    fn backward_reaches_every_weight() -> Result<()> {
        for act in [
            GluActivation::Silu,
            GluActivation::Gelu,
            GluActivation::Relu,
            GluActivation::Sigmoid,
        ] {
            let (glu, map) = random_glu(act, 4, 8);
            let xs = Tensor::randn(0f32, 1.0, (2, 3, 4), &Device::Cpu)?;
            let grads = glu.forward(&xs)?.sqr()?.sum_all()?.backward()?;
            for var in map.all_vars() {
                let g = grads.get(&var).expect("every weight gets a gradient");
                let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
                assert!(norm > 0.0 && norm.is_finite(), "{}: {norm}", act.name());
            }
        }
        Ok(())
    }

    #[test]
    fn aliases_imply_their_activation_and_refuse_another() {
        let mut m = serde_json::Map::new();
        GluSpec::apply_alias("geglu", &mut m).expect("fills in");
        assert_eq!(m["activation"], "gelu");
        let mut m = serde_json::Map::new();
        m.insert("activation".into(), "relu".into());
        GluSpec::apply_alias("reglu", &mut m).expect("agrees");
        let err = GluSpec::apply_alias("geglu", &mut m).expect_err("conflict");
        assert_eq!(err.field, "activation");
    }
}
