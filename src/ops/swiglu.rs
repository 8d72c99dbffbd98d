//! SwiGLU's gated activation h = silu(a) ⊙ b (a = gate(x), b = up(x)) with a closed-form
//! backward. With s = sigmoid(a) and the output's gradient g:
//!
//! - da = g ⊙ b ⊙ s ⊙ (1 + a ⊙ (1 − s))
//! - db = g ⊙ silu(a) = g ⊙ a ⊙ s
//!
//! candle's autograd of `silu(a) * b` walks the product and silu's composite derivative (neg,
//! exp, +1, recip, 1 − s, products, accumulations): about a dozen element-wise passes over the
//! (rows, d_ff) activations, each a launch on a GPU. On CUDA both directions are one kernel each
//! (`kernels::swiglu`); elsewhere the forward is candle's silu and product and the backward the
//! closed form above in candle ops, which keeps a, b and nothing else for backward.

use candle_core::{Result, Tensor};

use super::closed_form::{self, OpWithGrad2};

/// silu(a) ⊙ b, a and b of one shape and dtype; differentiable in both.
pub fn silu_mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() || a.dtype() != b.dtype() {
        candle_core::bail!(
            "SwiGLU: gate {:?} {:?} and up {:?} {:?} must match",
            a.dims(),
            a.dtype(),
            b.dims(),
            b.dtype()
        );
    }
    closed_form::apply2(a, b, SiluMul)
}

#[derive(Debug, Clone, Copy)]
struct SiluMul;

impl OpWithGrad2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul-with-grad"
    }

    fn forward(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if let Some(h) = crate::kernels::swiglu::forward(a, b)? {
            return Ok(h);
        }
        candle_nn::ops::silu(a)? * b
    }

    fn backward(&self, a: &Tensor, b: &Tensor, _ys: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        let grad = grad.to_dtype(a.dtype())?;
        if let Some(grads) = crate::kernels::swiglu::backward(a, b, &grad)? {
            return Ok(grads);
        }
        let s = candle_nn::ops::sigmoid(a)?;
        let silu = (a * &s)?;
        // 1 + a·(1 − s) = 1 + a − a·s = 1 + a − silu.
        let dsilu = ((&s * ((a - &silu)? + 1.0)?)? * b)?;
        Ok(((&grad * dsilu)?, (grad * silu)?))
    }

    fn reference(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        candle_nn::ops::silu(a)? * b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// max |x − y| / max(1, max |y|).
    fn err(x: &Tensor, y: &Tensor) -> Result<f32> {
        let (x, y) = (x.to_dtype(DType::F32)?, y.to_dtype(DType::F32)?);
        let diff = (&x - &y)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let top = y.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        Ok(diff / top.max(1.0))
    }

    #[test]
    fn silu_mul_matches_the_composite_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        // Odd sizes; values wide enough that sigmoid saturates at both ends.
        for dims in [vec![3usize, 7, 37], vec![1, 1, 1], vec![2, 5, 130]] {
            let a = Var::from_tensor(&(Tensor::randn(0f32, 3.0, dims.as_slice(), &dev)?))?;
            let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, dims.as_slice(), &dev)?)?;
            let w = Tensor::randn(0f32, 1.0, dims.as_slice(), &dev)?;
            let fused = silu_mul(a.as_tensor(), b.as_tensor())?;
            let composite = SiluMul.reference(a.as_tensor(), b.as_tensor())?;
            assert!(err(&fused, &composite)? < 1e-6, "forward {dims:?}");
            let gf = (&fused * &w)?.sum_all()?.backward()?;
            let gc = (&composite * &w)?.sum_all()?.backward()?;
            for v in [&a, &b] {
                let (x, y) = (gf.get(v.as_tensor()), gc.get(v.as_tensor()));
                let (Some(x), Some(y)) = (x, y) else {
                    panic!("a missing gradient at {dims:?}");
                };
                let e = err(x, y)?;
                assert!(e < 1e-5, "gradient {dims:?}: {e}");
            }
        }
        Ok(())
    }

    #[test]
    fn silu_mul_refuses_mismatched_operands() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (2, 3), &dev)?;
        let b = Tensor::randn(0f32, 1.0, (3, 2), &dev)?;
        let msg = silu_mul(&a, &b).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("must match"), "{msg}");
        Ok(())
    }
}
