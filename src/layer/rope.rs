//! Rotary position embedding as a layer of its own (`type: RoPELayer`, aliases `rope`, `rotary`):
//! the same rotation AttentionLayer applies to q and k (`ops::rope::Rope`: half-split pairs,
//! `inv_freq_i = base^(−2i/head_dim)`, optional llama3 scaling), here applied to the hidden state
//! viewed as `n_heads` heads of `d_model / n_heads`. Positions start at the forward context's
//! offset, so a cached decode rotates each new token as the full forward does. No weights.
//! Shapes: (b, t, d_model) -> (b, t, d_model).
//!
//! ```text
//! x = [x1 | x2] per head (halves)     y1 = x1·cos(p·f) − x2·sin(p·f)     y2 = x1·sin(p·f) + x2·cos(p·f)
//! ```

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::spec::{Layer, LayerSpec, LayerType, SpecProblem, Widths, check_dim};
use crate::model::context::ForwardCtx;
use crate::ops::rope::{Rope, RopeScaling};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RopeSpec {
    pub d_model: usize,
    /// Heads the width is split into; each head of `d_model / n_heads` is rotated. Default: 1.
    #[serde(default = "one")]
    pub n_heads: usize,
    /// θ. Default: 10000.
    #[serde(default = "base")]
    pub base: f64,
    /// HF-style scaling dict (`rope_type: llama3`). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
}

fn one() -> usize {
    1
}

fn base() -> f64 {
    10000.0
}

impl LayerType for RopeSpec {
    const NAME: &'static str = "RoPELayer";
    const ALIASES: &'static [&'static str] = &["rope", "rotary"];
}

impl RopeSpec {
    fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }
}

impl LayerSpec for RopeSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        let dims_ok =
            check_dim(&mut out, "d_model", self.d_model) & check_dim(&mut out, "n_heads", self.n_heads);
        if dims_ok && !self.d_model.is_multiple_of(self.n_heads) {
            out.push(
                SpecProblem::new(
                    "n_heads",
                    format!("must divide d_model ({} / {})", self.d_model, self.n_heads),
                )
                .with_help("each head rotates d_model / n_heads features"),
            );
        } else if dims_ok && !self.head_dim().is_multiple_of(2) {
            out.push(SpecProblem::new(
                "n_heads",
                format!(
                    "RoPE rotates pairs, so d_model / n_heads must be even (got {})",
                    self.head_dim()
                ),
            ));
        }
        if !(self.base.is_finite() && self.base > 1.0) {
            out.push(SpecProblem::new(
                "base",
                format!("must be a number above 1 (got {})", self.base),
            ));
        }
        if let Some(s) = &self.rope_scaling
            && s.rope_type != "llama3"
        {
            out.push(SpecProblem::new(
                "rope_scaling.rope_type",
                format!("unsupported rope type `{}` (supported: llama3)", s.rope_type),
            ));
        }
        out
    }

    fn widths(&self) -> Option<Widths> {
        Some(Widths::preserving("d_model", self.d_model))
    }

    fn params(&self) -> u64 {
        0
    }

    fn describe(&self) -> String {
        format!(
            "d_model={} n_heads={} base={}",
            self.d_model, self.n_heads, self.base
        )
    }

    fn build(&self, _vb: VarBuilder, _next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        Ok(Box::new(RotaryLayer {
            n_heads: self.n_heads,
            rope: Rope::new(self.head_dim(), self.base, self.rope_scaling.as_ref()),
        }))
    }
}

/// The built layer.
pub struct RotaryLayer {
    n_heads: usize,
    rope: Rope,
}

impl Layer for RotaryLayer {
    fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let heads = xs
            .reshape((b, t, self.n_heads, d / self.n_heads))?
            .transpose(1, 2)?;
        // why ctx.train: the differentiable path has a backward pass; the fused kernel has none.
        let rotated = self.rope.apply(&heads, ctx.pos_offset, ctx.train)?;
        rotated.transpose(1, 2)?.reshape((b, t, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn layer(d_model: usize, n_heads: usize) -> Box<dyn Layer> {
        let spec = RopeSpec {
            d_model,
            n_heads,
            base: 500.0,
            rope_scaling: None,
        };
        assert!(spec.problems().is_empty());
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        spec.build(vb, &mut 0).expect("build")
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff")
    }

    #[test]
    fn rotates_each_head_by_the_formula_and_continues_at_the_offset() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, h, hd) = (2, 5, 3, 8);
        let xs = Tensor::randn(0f32, 1.0, (b, t, h * hd), &dev)?;
        let ys = layer(h * hd, h).forward(&xs, &mut ForwardCtx::eval())?;
        // The formula, by hand: head k's pair i of token p turns by p · 500^(−2i/hd).
        let x = xs.to_vec3::<f32>()?;
        let y = ys.to_vec3::<f32>()?;
        for (bi, (xb, yb)) in x.iter().zip(&y).enumerate() {
            for p in 0..t {
                for k in 0..h {
                    for i in 0..hd / 2 {
                        let angle = p as f64 * 500f64.powf(-2.0 * i as f64 / hd as f64);
                        let (x1, x2) = (xb[p][k * hd + i] as f64, xb[p][k * hd + i + hd / 2] as f64);
                        let y1 = x1 * angle.cos() - x2 * angle.sin();
                        let y2 = x1 * angle.sin() + x2 * angle.cos();
                        assert!(
                            (yb[p][k * hd + i] as f64 - y1).abs() < 1e-5,
                            "b{bi} p{p} k{k} i{i}"
                        );
                        assert!((yb[p][k * hd + i + hd / 2] as f64 - y2).abs() < 1e-5);
                    }
                }
            }
        }
        // The last two tokens alone at offset 3 rotate as they did inside the whole sequence.
        let mut ctx = ForwardCtx::eval();
        ctx.pos_offset = 3;
        let tail = layer(h * hd, h).forward(&xs.narrow(1, 3, 2)?, &mut ctx)?;
        assert!(max_diff(&tail, &ys.narrow(1, 3, 2)?) < 1e-6);
        Ok(())
    }

    #[test]
    fn the_training_path_matches_and_has_the_inverse_rotation_as_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, 4, 16), &dev)?)?;
        let g = Tensor::randn(0f32, 1.0, (1, 4, 16), &dev)?;
        let rope = layer(16, 2);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let y = rope.forward(x.as_tensor(), &mut ForwardCtx::train(&mut rng))?;
        let fused = rope.forward(x.as_tensor(), &mut ForwardCtx::eval())?;
        assert!(max_diff(&y, &fused) < 1e-6);
        // A rotation is orthogonal: the gradient of ⟨y, g⟩ is the inverse rotation of g, whose
        // norm is g's, and rotating it forward again gives g back.
        let grads = (y * &g)?.sum_all()?.backward()?;
        let dx = grads.get(x.as_tensor()).expect("gradient of x");
        let back = rope.forward(dx, &mut ForwardCtx::eval())?;
        assert!(max_diff(&back, &g) < 1e-5);
        Ok(())
    }

    #[test]
    fn odd_heads_and_a_bad_base_are_located() {
        let spec = RopeSpec {
            d_model: 12,
            n_heads: 4,
            base: 0.5,
            rope_scaling: None,
        };
        let fields: Vec<String> = spec.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, vec!["n_heads", "base"]);
    }
}
