//! Cross-entropy over the vocabulary as one op with a closed-form backward: logits x (n, v) in
//! bf16/f16/f32 and targets t (n) →
//!   loss_i = lse_i − x_{i,t_i},  lse_i = log Σ_j exp(x_ij)          (f32, n values)
//!   d loss / d x_ij = (exp(x_ij − lse_i) − [j = t_i]) · g_i          (in the logits' dtype)
//! The forward keeps lse (n floats) for backward, and nothing of size (n, v). On CUDA with the
//! fused switch on, both directions are the kernels of `kernels::cross_entropy` (the logits are
//! read as they are; no f32 copy); elsewhere candle ops in f32 — the CPU path and the reference.
//! The same function as `nll(log_softmax(x.to_f32()), t)` per row, which the tests check.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, D, DType, Layout, Result, Shape, Tensor};

use super::closed_form::on_cpu;

/// The mean over rows of −log softmax(logits)[target]: logits (n, v), targets (n) → a scalar f32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    cross_entropy_rows(logits, targets)?.mean_all()
}

/// Each row's −log softmax(logits)[target]: logits (n, v), targets (n) of an integer dtype → (n)
/// f32. Differentiable in the logits.
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, _) = logits.dims2()?;
    if targets.dims() != [n] {
        candle_core::bail!(
            "cross-entropy: targets {:?} for logits {:?}",
            targets.dims(),
            logits.dims()
        );
    }
    let targets = targets.to_dtype(DType::U32)?;
    if logits.device().is_metal() {
        return reference_rows(logits, &targets);
    }
    let op = CrossEntropy {
        lse: Mutex::new(None),
    };
    logits
        .contiguous()?
        .apply_op2_arc(&targets.contiguous()?, Arc::new(Box::new(op)))
}

/// The composite of the training loss before this op: log-softmax in f32, then the negated target
/// entries (differentiable through candle's ops; Metal's path and an oracle of the tests).
pub fn reference_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    log_probs
        .gather(&targets.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()
}

/// The op; `lse` is the forward's logsumexp (n) f32, kept for backward.
struct CrossEntropy {
    lse: Mutex<Option<Tensor>>,
}

impl CrossEntropy {
    fn keep(&self, lse: Tensor) {
        if let Ok(mut slot) = self.lse.lock() {
            *slot = Some(lse);
        }
    }

    /// The forward's lse, or (should it be missing) recomputed from the logits.
    fn lse_for(&self, logits: &Tensor) -> Result<Tensor> {
        let kept = self.lse.lock().ok().and_then(|slot| slot.clone());
        match kept {
            Some(lse) => Ok(lse),
            None => logsumexp(&logits.to_dtype(DType::F32)?),
        }
    }
}

/// log Σ_j exp(x_ij) per row of an f32 (n, v), max-shifted: (n).
fn logsumexp(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?;
    (x.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + m)?.squeeze(1)
}

/// The candle-ops forward: (loss (n) f32, lse (n) f32) from logits (n, v) and u32 targets (n).
fn forward_ops(logits: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    let (_, v) = logits.dims2()?;
    if targets.elem_count() > 0 {
        let top = targets.max(0)?.to_scalar::<u32>()?;
        if top as usize >= v {
            candle_core::bail!("cross-entropy: target {top} outside a vocabulary of {v}");
        }
    }
    let x = logits.to_dtype(DType::F32)?;
    let lse = logsumexp(&x)?;
    let picked = x.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    Ok(((&lse - picked)?, lse))
}

/// The candle-ops backward: (softmax(x) − onehot(t)) · g per row, in the logits' dtype.
fn backward_ops(logits: &Tensor, targets: &Tensor, lse: &Tensor, grad: &Tensor) -> Result<Tensor> {
    let (_, v) = logits.dims2()?;
    let x = logits.to_dtype(DType::F32)?;
    let p = x.broadcast_sub(&lse.unsqueeze(1)?)?.exp()?;
    let columns = Tensor::arange(0u32, v as u32, logits.device())?.unsqueeze(0)?;
    let onehot = columns
        .broadcast_eq(&targets.unsqueeze(1)?)?
        .to_dtype(DType::F32)?;
    let g = grad.to_dtype(DType::F32)?.unsqueeze(1)?;
    (p - onehot)?.broadcast_mul(&g)?.to_dtype(logits.dtype())
}

/// The CUDA kernel's backward where it applies, else `None`.
#[cfg(feature = "cuda")]
fn fused_backward(logits: &Tensor, targets: &Tensor, lse: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
    if crate::kernels::cross_entropy::unavailable(logits.device(), logits.dtype()).is_some() {
        return Ok(None);
    }
    crate::kernels::cross_entropy::backward(logits, targets, lse, grad).map(Some)
}

#[cfg(not(feature = "cuda"))]
fn fused_backward(_: &Tensor, _: &Tensor, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
    Ok(None)
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy-with-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        on_cpu(self.name(), &[(s1, l1), (s2, l2)], |x| {
            let (loss, lse) = forward_ops(&x[0], &x[1])?;
            self.keep(lse);
            Ok(loss)
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        if crate::kernels::cross_entropy::unavailable(
            &candle_core::Device::Cuda(s1.device.clone()),
            s1.dtype(),
        )
        .is_none()
        {
            let (loss, lse) = crate::kernels::cross_entropy::forward_storage(s1, l1, s2, l2)?;
            self.keep(lse);
            return Ok((loss, Shape::from(l1.shape().dims()[0])));
        }
        super::closed_form::on_cuda(self.name(), &[(s1, l1), (s2, l2)], |x| {
            let (loss, lse) = forward_ops(&x[0], &x[1])?;
            self.keep(lse);
            Ok(loss)
        })
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _loss: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let lse = self.lse_for(logits)?;
        let dx = match fused_backward(logits, targets, &lse, grad)? {
            Some(dx) => dx,
            None => backward_ops(logits, targets, &lse, grad)?,
        };
        Ok((Some(dx), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// max |a − b| / max(1, max |b|), in f32.
    fn err_to_max(a: &Tensor, b: &Tensor) -> Result<f32> {
        let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
        let diff = (&a - &b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let top = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        Ok(diff / top.max(1.0))
    }

    /// The loss before this op: f32 cast, log-softmax with its closed-form backward, nll.
    fn composite(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let log_probs = super::super::softmax::log_softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
        candle_nn::loss::nll(&log_probs, targets)
    }

    /// The mean loss and d loss / d logits of `loss` on fresh variables.
    fn loss_and_grad(
        logits: &Tensor,
        targets: &Tensor,
        loss: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let var = Var::from_tensor(logits)?;
        let l = loss(var.as_tensor(), targets)?;
        let grads = l.backward()?;
        let g = grads
            .get(var.as_tensor())
            .expect("a gradient of the logits")
            .clone();
        Ok((l, g))
    }

    #[test]
    fn matches_the_log_softmax_nll_composite_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        for v in [37usize, 1000] {
            let n = 13;
            let logits = Tensor::randn(0f32, 3.0, (n, v), &dev)?;
            let targets = Tensor::rand(0f32, v as f32, n, &dev)?
                .floor()?
                .clamp(0f32, (v - 1) as f32)?
                .to_dtype(DType::U32)?;
            for (dtype, tol) in [(DType::F32, 1e-5f32), (DType::BF16, 2e-2)] {
                let x = logits.to_dtype(dtype)?;
                let (want, want_g) = loss_and_grad(&x, &targets, composite)?;
                let (got, got_g) = loss_and_grad(&x, &targets, cross_entropy)?;
                assert_eq!(got.dtype(), DType::F32);
                assert_eq!(got_g.dtype(), dtype, "the gradient keeps the logits' dtype");
                let fwd = err_to_max(&got, &want)?;
                // why: the gradient is O(1/n); relative to its own largest entry.
                let top = want_g
                    .to_dtype(DType::F32)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                let bwd = (got_g.to_dtype(DType::F32)? - want_g.to_dtype(DType::F32)?)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?
                    / top;
                eprintln!("v {v} {dtype:?}: loss {fwd:.2e}, dlogits {bwd:.2e} (of max {top:.2e})");
                assert!(fwd <= tol, "v {v} {dtype:?}: loss differs by {fwd}");
                assert!(bwd <= tol, "v {v} {dtype:?}: dlogits differ by {bwd} of {top}");
            }
        }
        Ok(())
    }

    #[test]
    fn per_row_losses_match_the_reference_and_upstream_weights_reach_each_row() -> Result<()> {
        let dev = Device::Cpu;
        let (n, v) = (6, 37);
        let logits = Tensor::randn(0f32, 2.0, (n, v), &dev)?;
        let targets = Tensor::new(&[0u32, 36, 5, 5, 17, 1], &dev)?;
        let rows = cross_entropy_rows(&logits, &targets)?;
        assert!(err_to_max(&rows, &reference_rows(&logits, &targets)?)? <= 1e-6);
        // A weighted sum: row i's gradient is scaled by its weight.
        let w = Tensor::new(&[1f32, 0.0, 2.0, -1.0, 0.5, 3.0], &dev)?;
        let weighted =
            |x: &Tensor, t: &Tensor, f: fn(&Tensor, &Tensor) -> Result<Tensor>| (f(x, t)? * &w)?.sum_all();
        let (_, got) = loss_and_grad(&logits, &targets, |x, t| weighted(x, t, cross_entropy_rows))?;
        let (_, want) = loss_and_grad(&logits, &targets, |x, t| weighted(x, t, reference_rows))?;
        assert!(err_to_max(&got, &want)? <= 1e-6);
        Ok(())
    }

    #[test]
    fn a_target_outside_the_vocabulary_is_an_error() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::zeros((2, 5), DType::F32, &dev)?;
        let targets = Tensor::new(&[1u32, 5], &dev)?;
        let err = cross_entropy(&logits, &targets).expect_err("target 5 of 5");
        assert!(err.to_string().contains("target 5"), "{err}");
        Ok(())
    }
}
