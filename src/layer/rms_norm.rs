//! RMSNorm (`type: RMSNormLayer`): y = x · rsqrt(mean(x²) + eps) · w, computed in f32.
//! Shapes: (b, t, d) -> (b, t, d).

use candle_core::{D, DType, Result, Tensor};
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

// The layer's spec and built-layer traits (see `spec.rs`).
impl super::LayerType for RmsNormSpec {
    const NAME: &'static str = "RMSNormLayer";
    const ALIASES: &'static [&'static str] = &["rms_norm", "rmsnorm"];
}

impl super::LayerSpec for RmsNormSpec {
    fn problems(&self) -> Vec<super::SpecProblem> {
        let mut out = Vec::new();
        super::spec::check_dim(&mut out, "d_model", self.d_model);
        super::spec::check_eps(&mut out, "eps", self.eps);
        out
    }

    fn widths(&self) -> Option<super::Widths> {
        Some(super::Widths::preserving("d_model", self.d_model))
    }

    /// d when affine, else none.
    fn params(&self) -> u64 {
        if self.elementwise_affine {
            self.d_model as u64
        } else {
            0
        }
    }

    fn describe(&self) -> String {
        format!("d_model={} eps={}", self.d_model, self.eps)
    }

    fn build(&self, vb: VarBuilder, _next_slot: &mut usize) -> Result<Box<dyn super::Layer>> {
        Ok(Box::new(RmsNorm::build(self, vb)?))
    }
}

impl super::Layer for RmsNorm {
    fn forward(&self, xs: &Tensor, ctx: &mut crate::model::context::ForwardCtx) -> Result<Tensor> {
        RmsNorm::forward(self, xs, ctx.train)
    }

    fn is_tail(&self) -> bool {
        true
    }
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

    /// `differentiable`: training, where the fused kernel runs with a closed-form backward
    /// ([`RmsNormWithGrad`]); without a weight, the f32 candle-ops path.
    pub fn forward(&self, xs: &Tensor, differentiable: bool) -> Result<Tensor> {
        match (&self.weight, differentiable) {
            (Some(w), false) => candle_nn::ops::rms_norm(&xs.contiguous()?, w, self.eps as f32),
            (Some(w), true) => crate::ops::closed_form::apply2(xs, w, RmsNormWithGrad { eps: self.eps }),
            (None, _) => rms_norm_reference(xs, None, self.eps),
        }
    }

    pub fn d_model(&self) -> usize {
        self.d_model
    }
}

/// x · rsqrt(mean(x²) + eps) (· w) from candle ops, in f32: the reference of the fused paths.
pub fn rms_norm_reference(xs: &Tensor, w: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let dtype = xs.dtype();
    let x = xs.to_dtype(DType::F32)?;
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let y = x.broadcast_div(&(ms + eps)?.sqrt()?)?.to_dtype(dtype)?;
    match w {
        Some(w) => y.broadcast_mul(w),
        None => Ok(y),
    }
}

/// RMSNorm's closed-form backward from candle ops in f32, (dx, dw) in the dtypes of `xs` and `w`:
/// with r = rsqrt(mean(x²) + eps), n = x·r and u = g ⊙ w, dx = r · (u − n · mean(u ⊙ n)) and
/// dw = Σ_rows g ⊙ n. The CPU path and the reference of the fused CUDA kernel
/// (`kernels::rms_norm`).
pub fn rms_norm_backward_reference(
    xs: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let x = xs.to_dtype(DType::F32)?;
    let g = grad.to_dtype(DType::F32)?;
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    let n = x.broadcast_mul(&r)?;
    let u = g.broadcast_mul(&w.to_dtype(DType::F32)?)?;
    let dot = (&u * &n)?.mean_keepdim(D::Minus1)?;
    let dx = (u - n.broadcast_mul(&dot)?)?.broadcast_mul(&r)?;
    let d = w.dim(0)?;
    let dw = (g * n)?.reshape(((), d))?.sum(0)?;
    Ok((dx.to_dtype(xs.dtype())?, dw.to_dtype(w.dtype())?))
}

/// RMSNorm with candle's fused kernel forward and a closed-form backward (in f32): with
/// r = rsqrt(mean(x²) + eps), n = x·r and u = g ⊙ w,
/// dx = r · (u − n · mean(u ⊙ n)) and dw = Σ_rows g ⊙ n.
/// The composite path's backward walks ~10 ops, each of which candle also zero-fills and adds
/// into a fresh gradient buffer. On CUDA (with `train.fused`) the backward is one fused kernel
/// (`kernels::rms_norm`); elsewhere [`rms_norm_backward_reference`].
#[derive(Debug, Clone, Copy)]
pub struct RmsNormWithGrad {
    pub eps: f64,
}

impl crate::ops::closed_form::OpWithGrad2 for RmsNormWithGrad {
    fn name(&self) -> &'static str {
        "rms-norm-with-grad"
    }

    fn forward(&self, xs: &Tensor, w: &Tensor) -> Result<Tensor> {
        if xs.dtype() == DType::F64 {
            // candle's kernel has no f64 (gradient checks run in it).
            return rms_norm_reference(xs, Some(w), self.eps);
        }
        candle_nn::ops::rms_norm(xs, w, self.eps as f32)
    }

    fn backward(&self, xs: &Tensor, w: &Tensor, _ys: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        // why: on CUDA one fused kernel (and a small reduction) replaces the ~10 f32 ops below.
        if let Some(grads) = crate::kernels::rms_norm::backward(xs, w, grad, self.eps)? {
            return Ok(grads);
        }
        rms_norm_backward_reference(xs, w, grad, self.eps)
    }

    fn reference(&self, xs: &Tensor, w: &Tensor) -> Result<Tensor> {
        rms_norm_reference(xs, Some(w), self.eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::closed_form::check::against_reference2;
    use candle_core::Device;

    #[test]
    fn fused_forward_and_closed_form_backward_match_the_candle_ops() -> Result<()> {
        let dev = Device::Cpu;
        // An odd width, rows of very different scales, and a weight far from ones.
        let (b, t, d) = (2, 5, 37);
        let x = Tensor::randn(0f32, 1.0, (b, t, d), &dev)?
            .broadcast_mul(&Tensor::randn(0f32, 3.0, (b, t, 1), &dev)?.abs()?)?;
        let w = Tensor::randn(1f32, 0.5, d, &dev)?;
        let up = Tensor::randn(0f32, 1.0, (b, t, d), &dev)?;
        against_reference2(RmsNormWithGrad { eps: 1e-5 }, &x, &w, &up, 2e-5)?;
        // Half precision keeps its dtype for output and gradients; the math runs in f32.
        let (xh, wh) = (x.to_dtype(DType::BF16)?, w.to_dtype(DType::BF16)?);
        against_reference2(RmsNormWithGrad { eps: 1e-5 }, &xh, &wh, &up, 3e-2)
    }

    #[test]
    fn training_and_inference_paths_agree() -> Result<()> {
        let dev = Device::Cpu;
        let vb = candle_nn::VarBuilder::from_tensors(
            [("weight".to_string(), Tensor::randn(1f32, 0.3, 16, &dev)?)].into(),
            DType::F32,
            &dev,
        );
        let spec = RmsNormSpec {
            d_model: 16,
            eps: 1e-5,
            elementwise_affine: true,
        };
        let norm = RmsNorm::build(&spec, vb)?;
        let x = Tensor::randn(0f32, 2.0, (3, 4, 16), &dev)?;
        let a = norm.forward(&x, true)?;
        let b = norm.forward(&x, false)?;
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        Ok(())
    }
}
