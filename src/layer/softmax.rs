//! Softmax and log-softmax over the last dimension with a hand-written backward pass.
//!
//! candle's differentiable `softmax`/`log_softmax` are compositions (max, subtract, exp, sum,
//! divide/log): backward walks every one of them and keeps each intermediate alive until it does.
//! In training those intermediates are the largest tensors of a step — the attention scores
//! (b, heads, t, t) of every layer and the (b·t, vocab) logits of the loss — so here the forward
//! runs untracked and backward uses the closed forms, which need only the output y:
//!
//! - softmax: dx = y ⊙ (g − Σ g ⊙ y)
//! - log-softmax: dx = g − softmax(x) · Σ g, with softmax(x) = exp(y)
//!
//! The forward delegates to candle's own kernels (fused `softmax_last_dim`, composite
//! `log_softmax`) through one code path for every device (see [`delegate`]), so the CPU tests
//! exercise the same plumbing the GPU runs. Metal falls back to the composite ops.

use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp1, D, Layout, Result, Shape, Storage, Tensor};

/// Softmax over the last dimension; differentiable with a one-pass backward.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if xs.device().is_metal() {
        return candle_nn::ops::softmax(xs, D::Minus1);
    }
    xs.contiguous()?.apply_op1(LastDim(Kind::Softmax))
}

/// Log-softmax over the last dimension; differentiable with a one-pass backward.
pub fn log_softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if xs.device().is_metal() {
        return candle_nn::ops::log_softmax(xs, D::Minus1);
    }
    xs.contiguous()?.apply_op1(LastDim(Kind::LogSoftmax))
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Softmax,
    LogSoftmax,
}

struct LastDim(Kind);

impl LastDim {
    /// Run candle's forward on an untracked tensor over (a copy of) `storage`, and hand back the
    /// result's storage. Copies in and out because a custom op borrows its input and must return
    /// an owned result; that is two memory passes against the several the composite backward saves.
    fn delegate(&self, storage: Storage, layout: &Layout) -> Result<Storage> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("softmax: the input must be contiguous (got strides {:?})", layout.stride());
        };
        let flat = Tensor::from_storage(storage, end, BackpropOp::none(), false);
        let xs = flat.narrow(0, start, end - start)?.reshape(layout.shape())?;
        let ys = match self.0 {
            Kind::Softmax => candle_nn::ops::softmax_last_dim(&xs)?,
            Kind::LogSoftmax => candle_nn::ops::log_softmax(&xs, D::Minus1)?,
        };
        let ys = ys.contiguous()?;
        let (storage, layout) = ys.storage_and_layout();
        if layout.start_offset() != 0 {
            candle_core::bail!("softmax: unexpected offset in a fresh result");
        }
        storage.try_clone(layout)
    }
}

impl CustomOp1 for LastDim {
    fn name(&self) -> &'static str {
        match self.0 {
            Kind::Softmax => "softmax-last-dim-grad",
            Kind::LogSoftmax => "log-softmax-last-dim-grad",
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        match self.delegate(Storage::Cpu(storage.clone()), layout)? {
            Storage::Cpu(out) => Ok((out, layout.shape().clone())),
            _ => candle_core::bail!("softmax: the CPU forward left the CPU"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        match self.delegate(Storage::Cuda(storage.try_clone(layout)?), layout)? {
            Storage::Cuda(out) => Ok((out, layout.shape().clone())),
            _ => candle_core::bail!("softmax: the CUDA forward left the GPU"),
        }
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = match self.0 {
            Kind::Softmax => {
                let gy = (grad_res * res)?;
                let sum = gy.sum_keepdim(D::Minus1)?;
                (gy - res.broadcast_mul(&sum)?)?
            }
            Kind::LogSoftmax => {
                let sum = grad_res.sum_keepdim(D::Minus1)?;
                (grad_res - res.exp()?.broadcast_mul(&sum)?)?
            }
        };
        Ok(Some(grad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a.to_dtype(DType::F32).expect("f32") - b.to_dtype(DType::F32).expect("f32"))
            .expect("same shape")
            .abs()
            .expect("abs");
        d.flatten_all()
            .expect("flat")
            .max(0)
            .expect("max")
            .to_scalar::<f32>()
            .expect("scalar")
    }

    /// Fresh random logits (b, h, t, k) with a causal −∞ mask on the last two dims, as attention has.
    fn masked_scores(dev: &Device) -> Result<Tensor> {
        let (b, h, t) = (2, 3, 7);
        let x = Tensor::randn(0f32, 3.0, (b, h, t, t), dev)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        x.broadcast_add(&Tensor::from_vec(mask, (t, t), dev)?)
    }

    fn check(kind: Kind, x: &Tensor, up: &Tensor, tol: f32) -> Result<()> {
        let var = Var::from_tensor(x)?;
        let ours = match kind {
            Kind::Softmax => softmax_last_dim(var.as_tensor())?,
            Kind::LogSoftmax => log_softmax_last_dim(var.as_tensor())?,
        };
        let reference = match kind {
            Kind::Softmax => candle_nn::ops::softmax(var.as_tensor(), D::Minus1)?,
            Kind::LogSoftmax => candle_nn::ops::log_softmax(var.as_tensor(), D::Minus1)?,
        };
        // Masked log-probabilities are −∞ in both; compare where finite via the weighted sum.
        let finite = |t: &Tensor| -> Result<Tensor> {
            let keep = t.to_dtype(DType::F32)?.ge(-1e30)?;
            keep.where_cond(&t.to_dtype(DType::F32)?, &Tensor::zeros_like(&t.to_dtype(DType::F32)?)?)
        };
        let fwd = max_abs_diff(&finite(&ours)?, &finite(&reference)?);
        assert!(fwd <= tol, "{kind:?} forward differs by {fwd}");
        let loss = |y: &Tensor| -> Result<Tensor> { (finite(y)? * up)?.sum_all() };
        let g_ours = loss(&ours)?.backward()?;
        let g_ref = loss(&reference)?.backward()?;
        let (a, b) = (
            g_ours.get(var.as_tensor()).expect("our gradient"),
            g_ref.get(var.as_tensor()).expect("reference gradient"),
        );
        let bwd = max_abs_diff(a, b);
        assert!(bwd <= tol, "{kind:?} backward differs by {bwd}");
        let scale = a.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(scale > 1e-3, "a gradient of {scale} tests nothing");
        Ok(())
    }

    #[test]
    fn matches_the_composite_ops_forward_and_backward_under_a_causal_mask() -> Result<()> {
        let dev = Device::Cpu;
        for kind in [Kind::Softmax, Kind::LogSoftmax] {
            let x = masked_scores(&dev)?;
            let up = Tensor::randn(0f32, 1.0, x.shape(), &dev)?;
            check(kind, &x, &up, 2e-5)?;
        }
        Ok(())
    }

    #[test]
    fn wide_rows_odd_lengths_and_offset_inputs() -> Result<()> {
        let dev = Device::Cpu;
        for kind in [Kind::Softmax, Kind::LogSoftmax] {
            // A vocabulary-wide odd row length, and a view that starts mid-buffer (narrow on dim 0).
            let x = Tensor::randn(0f32, 4.0, (5, 1031), &dev)?.narrow(0, 2, 3)?;
            assert!(x.layout().start_offset() > 0);
            let up = Tensor::randn(0f32, 1.0, x.shape(), &dev)?;
            check(kind, &x, &up, 2e-5)?;
        }
        Ok(())
    }

    #[test]
    fn half_precision_inputs() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (4, 33), &dev)?.to_dtype(DType::BF16)?;
        let up = Tensor::randn(0f32, 1.0, (4, 33), &dev)?;
        let var = Var::from_tensor(&x)?;
        let ours = softmax_last_dim(var.as_tensor())?;
        assert_eq!(ours.dtype(), DType::BF16);
        let reference = candle_nn::ops::softmax(var.as_tensor(), D::Minus1)?;
        assert!(max_abs_diff(&ours, &reference) <= 1e-2);
        let g = (ours.to_dtype(DType::F32)? * &up)?.sum_all()?.backward()?;
        let r = (reference.to_dtype(DType::F32)? * &up)?.sum_all()?.backward()?;
        let d = max_abs_diff(
            g.get(var.as_tensor()).expect("ours"),
            r.get(var.as_tensor()).expect("reference"),
        );
        assert!(d <= 2e-2, "bf16 backward differs by {d}");
        Ok(())
    }

    #[test]
    fn strided_input_is_made_contiguous_first() -> Result<()> {
        let x = Tensor::randn(0f32, 1.0, (5, 4), &Device::Cpu)?.t()?;
        assert!(!x.is_contiguous());
        let up = Tensor::randn(0f32, 1.0, (4, 5), &Device::Cpu)?;
        check(Kind::Softmax, &x, &up, 2e-5)
    }
}
