//! A linear map with a low-rank adapter (`type: LoRALinearLayer`; aliases `lora_linear`, `lora`) —
//! Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (2021); PEFT's `lora.Linear`.
//!
//! ```text
//! y = x·Wᵀ + b + (alpha / r) · (drop(x)·Aᵀ)·Bᵀ        A (r, d_in), B (d_out, r)
//! ```
//!
//! The base `weight` and `bias` are frozen: the forward reads them detached, so backward gives
//! them no gradient and the optimizer (which skips parameters without one) leaves them
//! byte-identical. Only `lora_A.weight` (Kaiming-uniform with a = √5, i.e. uniform ±1/√d_in, as
//! PEFT) and `lora_B.weight` (zeros) train; with B = 0 the layer is exactly its base map.
//! [`LoraLinear::merged_weight`] folds the adapter into the base, W + (alpha/r)·B·A, for export.
//! Dropout (on the adapter's input only) uses the run's seeded RNG while training.
//! Shapes: (b, t, d_in) -> (b, t, d_out).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::dropout::apply_dropout;
use super::linear::linear;
use super::spec::{Layer, LayerSpec, LayerType, SpecProblem, Widths, check_dim};
use crate::model::context::ForwardCtx;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// Rank of the adapter. Default: 8.
    #[serde(default = "default_r")]
    pub r: usize,
    /// Scale numerator: the adapter is multiplied by alpha / r. Default: 16.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Dropout on the adapter's input while training, in [0, 1). Default: 0.
    #[serde(default)]
    pub dropout: f64,
    /// Bias on the base map (frozen like its weight). Default: true.
    #[serde(default = "yes")]
    pub bias: bool,
}

fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    16.0
}
fn yes() -> bool {
    true
}

impl LoraSpec {
    /// The adapter's scale alpha / r.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r.max(1) as f64
    }
}

impl LayerType for LoraSpec {
    const NAME: &'static str = "LoRALinearLayer";
    const ALIASES: &'static [&'static str] = &["lora_linear", "lora"];
}

impl LayerSpec for LoraSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        let dims = check_dim(&mut out, "d_in", self.d_in) & check_dim(&mut out, "d_out", self.d_out);
        let smaller = self.d_in.min(self.d_out);
        if self.r == 0 {
            out.push(
                SpecProblem::new("r", "must be at least 1 (got 0)").with_help("LoRA commonly uses r: 8"),
            );
        } else if dims && self.r > smaller {
            out.push(
                SpecProblem::new(
                    "r",
                    format!(
                        "r = {} is larger than the layer (min(d_in, d_out) = {smaller}): the adapter would not be low-rank",
                        self.r
                    ),
                )
                .with_help(format!("use r: {} or fewer (typically 4–64)", smaller)),
            );
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            out.push(
                SpecProblem::new("alpha", format!("must be a positive number (got {})", self.alpha))
                    .with_help("the adapter is scaled by alpha / r; LoRA commonly uses alpha: 16"),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            out.push(SpecProblem::new(
                "dropout",
                format!("must be in [0, 1) (got {})", self.dropout),
            ));
        }
        out
    }

    fn widths(&self) -> Option<Widths> {
        Some(Widths {
            d_in: ("d_in", self.d_in),
            d_out: ("d_out", self.d_out),
        })
    }

    /// d_in·d_out (+ d_out) frozen, r·(d_in + d_out) trainable.
    fn params(&self) -> u64 {
        let (i, o, r) = (self.d_in as u64, self.d_out as u64, self.r as u64);
        i.saturating_mul(o)
            .saturating_add(if self.bias { o } else { 0 })
            .saturating_add(r.saturating_mul(i.saturating_add(o)))
    }

    fn describe(&self) -> String {
        format!(
            "d_in={} d_out={} r={} alpha={} dropout={} bias={} trainable={}",
            self.d_in,
            self.d_out,
            self.r,
            self.alpha,
            self.dropout,
            self.bias,
            (self.r as u64).saturating_mul((self.d_in + self.d_out) as u64)
        )
    }

    fn build(&self, vb: VarBuilder, _next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        Ok(Box::new(LoraLinear::build(self, vb)?))
    }
}

/// A built LoRA linear layer.
pub struct LoraLinear {
    base: Linear,
    /// (r, d_in)
    a: Tensor,
    /// (d_out, r)
    b: Tensor,
    scale: f64,
    dropout: f64,
}

impl LoraLinear {
    /// Base at `<path>.weight`/`bias`, adapter at `<path>.lora_A.weight`, `<path>.lora_B.weight`.
    pub fn build(spec: &LoraSpec, vb: VarBuilder) -> Result<Self> {
        let base = linear(spec.d_in, spec.d_out, spec.bias, vb.clone())?;
        let bound = 1.0 / (spec.d_in as f64).sqrt();
        let a = vb.pp("lora_A").get_with_hints(
            (spec.r, spec.d_in),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let b = vb
            .pp("lora_B")
            .get_with_hints((spec.d_out, spec.r), "weight", Init::Const(0.0))?;
        Ok(Self {
            base,
            a,
            b,
            scale: spec.scale(),
            dropout: spec.dropout,
        })
    }

    /// (b, t, d_in) -> (b, t, d_out); the base frozen (detached), the adapter trainable.
    pub fn forward_ctx(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let frozen = Linear::new(self.base.weight().detach(), self.base.bias().map(Tensor::detach));
        let base = frozen.forward(xs)?;
        let xd = apply_dropout(xs, self.dropout, ctx.train, ctx.rng.as_deref_mut())?;
        let delta = xd
            .broadcast_matmul(&self.a.t()?)?
            .broadcast_matmul(&self.b.t()?)?;
        base + (delta * self.scale)?
    }

    /// W + (alpha/r)·B·A (d_out, d_in): the base weight with the adapter folded in, so that an
    /// exported model is a plain linear map.
    pub fn merged_weight(&self) -> Result<Tensor> {
        self.base.weight().detach() + (self.b.matmul(&self.a)? * self.scale)?
    }
}

impl Layer for LoraLinear {
    fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        self.forward_ctx(xs, ctx)
    }

    fn is_tail(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn spec(d_in: usize, d_out: usize, r: usize) -> LoraSpec {
        LoraSpec {
            d_in,
            d_out,
            r,
            alpha: 16.0,
            dropout: 0.0,
            bias: true,
        }
    }

    fn built(s: &LoraSpec) -> (LoraLinear, VarMap) {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let layer = LoraLinear::build(s, vb).expect("build");
        // A visible base bias, so that "the base's output" is not just x·Wᵀ.
        let data = map.data().lock().expect("lock");
        let bias = Tensor::randn(0f32, 1.0, s.d_out, &Device::Cpu).expect("randn");
        data["bias"].set(&bias).expect("set");
        drop(data);
        (layer, map)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
            .expect("same shapes")
    }

    #[test]
    fn zero_b_gives_the_base_output_exactly() -> Result<()> {
        let s = spec(12, 10, 4);
        let (lora, map) = built(&s);
        let xs = Tensor::randn(0f32, 1.0, (2, 5, 12), &Device::Cpu)?;
        let got = lora.forward_ctx(&xs, &mut ForwardCtx::eval())?;
        let data = map.data().lock().expect("lock");
        let plain = Linear::new(
            data["weight"].as_tensor().clone(),
            Some(data["bias"].as_tensor().clone()),
        );
        assert_eq!(max_diff(&got, &plain.forward(&xs)?), 0.0);
        assert_eq!(max_diff(&lora.merged_weight()?, data["weight"].as_tensor()), 0.0);
        Ok(())
    }

    #[test]
    fn only_the_adapter_gets_gradients() -> Result<()> {
        let s = spec(12, 10, 4);
        let (lora, map) = built(&s);
        let xs = Tensor::randn(0f32, 1.0, (2, 5, 12), &Device::Cpu)?;
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let grads = lora
            .forward_ctx(&xs, &mut ForwardCtx::train(&mut rng))?
            .sqr()?
            .sum_all()?
            .backward()?;
        let data = map.data().lock().expect("lock");
        let norm = |name: &str| {
            grads.get(data[name].as_tensor()).map(|g| {
                g.sqr()
                    .and_then(|g| g.sum_all()?.to_scalar::<f32>())
                    .expect("norm")
            })
        };
        assert_eq!(norm("weight"), None, "the base weight is frozen");
        assert_eq!(norm("bias"), None, "the base bias is frozen");
        assert!(
            norm("lora_B.weight").is_some_and(|g| g > 0.0),
            "B trains from zero"
        );
        // With B = 0, A's gradient exists but is zero; once B moves, A learns too.
        assert_eq!(norm("lora_A.weight"), Some(0.0));
        data["lora_B.weight"].set(&Tensor::randn(0f32, 0.1, (10, 4), &Device::Cpu)?)?;
        drop(data);
        let grads = lora
            .forward_ctx(&xs, &mut ForwardCtx::eval())?
            .sqr()?
            .sum_all()?
            .backward()?;
        let data = map.data().lock().expect("lock");
        let g = grads
            .get(data["lora_A.weight"].as_tensor())
            .expect("A's gradient");
        assert!(g.sqr()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }

    #[test]
    fn the_merged_weight_computes_the_same_map() -> Result<()> {
        let s = spec(12, 10, 4);
        let (lora, map) = built(&s);
        map.data().lock().expect("lock")["lora_B.weight"].set(&Tensor::randn(
            0f32,
            0.5,
            (10, 4),
            &Device::Cpu,
        )?)?;
        let xs = Tensor::randn(0f32, 1.0, (2, 5, 12), &Device::Cpu)?;
        let got = lora.forward_ctx(&xs, &mut ForwardCtx::eval())?;
        let bias = map.data().lock().expect("lock")["bias"].as_tensor().clone();
        let merged = Linear::new(lora.merged_weight()?, Some(bias)).forward(&xs)?;
        assert!(max_diff(&got, &merged) < 1e-4);
        Ok(())
    }

    #[test]
    fn bad_sizes_are_problems_at_their_fields() {
        let fields = |s: LoraSpec| -> Vec<String> { s.problems().into_iter().map(|p| p.field).collect() };
        assert!(fields(spec(64, 32, 8)).is_empty());
        let big = spec(64, 32, 40).problems();
        assert_eq!(big[0].field, "r");
        assert!(
            big[0].message.contains("larger than the layer"),
            "{}",
            big[0].message
        );
        assert!(big[0].help.as_deref().is_some_and(|h| h.contains("r: 32")));
        assert_eq!(fields(spec(64, 32, 0)), ["r"]);
        assert_eq!(
            fields(LoraSpec {
                alpha: 0.0,
                ..spec(64, 32, 8)
            }),
            ["alpha"]
        );
        assert_eq!(
            fields(LoraSpec {
                dropout: 1.0,
                ..spec(64, 32, 8)
            }),
            ["dropout"]
        );
        assert_eq!(spec(64, 32, 8).params(), 64 * 32 + 32 + 8 * 96);
    }
}
