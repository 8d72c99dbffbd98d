//! Softmax and log-softmax over the last dimension with closed-form backward passes, for
//! training: the attention scores (b, heads, t, t) of every layer and the (b·t, vocab) logits of
//! the loss are a step's largest tensors, and candle's composite versions keep several of them
//! per call for backward. These keep only the output y:
//!
//! - softmax: dx = y ⊙ (g − Σ g ⊙ y)  (forward: candle's fused `softmax_last_dim`)
//! - log-softmax: dx = g − exp(y) · Σ g  (forward: candle's `log_softmax`, run untracked)

use candle_core::{D, Result, Tensor};

use super::closed_form::{self, OpWithGrad};

/// Softmax over the last dimension; differentiable with a one-pass backward.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    closed_form::apply(xs, Softmax)
}

/// Log-softmax over the last dimension; differentiable with a one-pass backward.
pub fn log_softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    closed_form::apply(xs, LogSoftmax)
}

#[derive(Debug, Clone, Copy)]
struct Softmax;

impl OpWithGrad for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim-with-grad"
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax_last_dim(xs)
    }

    fn backward(&self, _xs: &Tensor, ys: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let gy = (grad * ys)?;
        let sum = gy.sum_keepdim(D::Minus1)?;
        gy - ys.broadcast_mul(&sum)?
    }

    fn reference(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax(xs, D::Minus1)
    }
}

#[derive(Debug, Clone, Copy)]
struct LogSoftmax;

impl OpWithGrad for LogSoftmax {
    fn name(&self) -> &'static str {
        "log-softmax-last-dim-with-grad"
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::log_softmax(xs, D::Minus1)
    }

    fn backward(&self, _xs: &Tensor, ys: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let sum = grad.sum_keepdim(D::Minus1)?;
        grad - ys.exp()?.broadcast_mul(&sum)?
    }

    fn reference(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::log_softmax(xs, D::Minus1)
    }
}

#[cfg(test)]
mod tests {
    use super::closed_form::check::{against_reference, max_abs_diff};
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Masked −∞ entries (log-probabilities of masked keys) to 0, so the weighted sum is finite.
    fn finite(t: &Tensor) -> Result<Tensor> {
        let x = t.to_dtype(DType::F32)?;
        x.ge(-1e30)?.where_cond(&x, &x.zeros_like()?)
    }

    /// Fresh random scores (b, h, t, t) under a causal −∞ mask, as attention has.
    fn masked_scores(dev: &Device) -> Result<Tensor> {
        let (b, h, t) = (2, 3, 7);
        let x = Tensor::randn(0f32, 3.0, (b, h, t, t), dev)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        x.broadcast_add(&Tensor::from_vec(mask, (t, t), dev)?)
    }

    #[test]
    fn match_the_composite_ops_under_a_causal_mask() -> Result<()> {
        let x = masked_scores(&Device::Cpu)?;
        let up = Tensor::randn(0f32, 1.0, x.shape(), &Device::Cpu)?;
        against_reference(Softmax, &x, &up, finite, 2e-5)?;
        against_reference(LogSoftmax, &x, &up, finite, 2e-5)
    }

    #[test]
    fn wide_odd_rows_offset_and_strided_inputs() -> Result<()> {
        let dev = Device::Cpu;
        // A vocabulary-wide odd row length, viewed from mid-buffer (narrow on dim 0).
        let x = Tensor::randn(0f32, 4.0, (5, 1031), &dev)?.narrow(0, 2, 3)?;
        assert!(x.layout().start_offset() > 0);
        let up = Tensor::randn(0f32, 1.0, x.shape(), &dev)?;
        against_reference(Softmax, &x, &up, finite, 2e-5)?;
        against_reference(LogSoftmax, &x, &up, finite, 2e-5)?;
        let strided = Tensor::randn(0f32, 1.0, (9, 4), &dev)?.t()?;
        assert!(!strided.is_contiguous());
        let up = Tensor::randn(0f32, 1.0, (4, 9), &dev)?;
        against_reference(Softmax, &strided, &up, finite, 2e-5)
    }

    #[test]
    fn half_precision_inputs_keep_their_dtype() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (4, 33), &dev)?.to_dtype(DType::BF16)?;
        let up = Tensor::randn(0f32, 1.0, (4, 33), &dev)?;
        against_reference(Softmax, &x, &up, finite, 2e-2)?;
        let var = Var::from_tensor(&x)?;
        let ys = softmax_last_dim(var.as_tensor())?;
        assert_eq!(ys.dtype(), DType::BF16);
        assert!(max_abs_diff(&ys, &candle_nn::ops::softmax(&x, D::Minus1)?) <= 1e-2);
        Ok(())
    }
}
