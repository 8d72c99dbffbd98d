//! Fused cross-entropy over the vocabulary (`kernels/cross_entropy.cu`): for logits x (n, v) and
//! u32 targets t (n), the forward writes loss_i = lse_i − x_{i,t_i} and lse_i = log Σ_j exp(x_ij)
//! (both f32, n values) reading the logits once; the backward writes
//! dx_ij = (exp(x_ij − lse_i) − [j = t_i]) · g_i in the logits' dtype, reading them once more.
//! No f32 (n, v) tensor is ever written (the candle-ops path casts the logits to f32 and keeps a
//! log-softmax of that size).
//!
//! One block per row (128–512 threads by v), an online max / rescaled sum, 16-byte loads where a
//! row is aligned. The op (`ops::cross_entropy`) calls this on CUDA when the switch of
//! [`super::set_fused_training`] is on and the logits are bf16, f16 or f32; its candle-ops path
//! (CPU, and CUDA otherwise) is the reference the GPU tests compare against.

use candle_core::{DType, Device};

/// Why the fused kernels do not take logits of `dtype` on `device`, or `None` where they run.
/// Logs a CUDA fallback once per reason.
pub fn unavailable(device: &Device, dtype: DType) -> Option<String> {
    if !cfg!(feature = "cuda") {
        return Some("built without the `cuda` feature".into());
    }
    if !device.is_cuda() {
        return Some("not a CUDA device".into());
    }
    if !super::flash_attention::fused_training() {
        return Some("switched off (train.fused: false or CARAMBA_FUSED_TRAINING=0)".into());
    }
    if !matches!(dtype, DType::BF16 | DType::F16 | DType::F32) {
        let why = format!("{dtype:?} logits");
        log_fallback(&why);
        return Some(why);
    }
    None
}

/// Log, once per distinct reason, why a CUDA call runs the candle ops.
fn log_fallback(reason: &str) {
    super::fallback::log_once("cross-entropy", "candle ops", reason);
}

/// Threads of a row's block: enough 16-byte packs for each to take a handful.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn threads_for(v: usize) -> u32 {
    if v >= 8192 {
        512
    } else if v >= 1024 {
        256
    } else {
        128
    }
}

#[cfg(feature = "cuda")]
pub use imp::{backward, forward_storage};

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::{CudaStorage, DType, Device, Layout, Result, Tensor};

    use super::threads_for;
    use crate::kernels::cuda::{CROSS_ENTROPY, address, empty, empty_storage, function, storage_address};

    /// Rows of a grid (more are strided over its blocks).
    const MAX_BLOCKS: usize = 1 << 20;

    fn suffix(dtype: DType) -> Result<&'static str> {
        Ok(match dtype {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::F32 => "f32",
            other => candle_core::bail!("fused cross-entropy: {other:?} logits"),
        })
    }

    fn launch_err(
        name: &str,
    ) -> impl Fn(candle_core::cuda_backend::cudarc::driver::DriverError) -> candle_core::Error + '_ {
        move |e| candle_core::Error::Cuda(format!("{name}: {e}").into())
    }

    /// The forward on an op's storages: logits (n, v) and u32 targets (n), both contiguous →
    /// (the loss (n) f32 as a storage, lse (n) f32).
    pub fn forward_storage(
        logits: &CudaStorage,
        l1: &Layout,
        targets: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Tensor)> {
        use candle_core::backend::BackendStorage;
        let (n, v) = l1.shape().dims2()?;
        let (Some((x_at, _)), Some((t_at, _))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("fused cross-entropy: non-contiguous logits or targets");
        };
        if l2.shape().dims1()? != n || targets.dtype() != DType::U32 {
            candle_core::bail!(
                "fused cross-entropy: targets {:?} {:?} for logits {:?}",
                targets.dtype(),
                l2.shape(),
                l1.shape()
            );
        }
        if v == 0 || v > i32::MAX as usize {
            candle_core::bail!("fused cross-entropy: a vocabulary of {v}");
        }
        let dev = &logits.device;
        let stream = dev.cuda_stream();
        let loss = empty_storage(dev, DType::F32, n)?;
        let lse = empty(dev, DType::F32, n)?;
        if n == 0 {
            return Ok((loss, lse));
        }
        let (x_ptr, t_ptr) = (storage_address(logits, x_at)?, storage_address(targets, t_at)?);
        let (loss_ptr, lse_ptr) = (storage_address(&loss, 0)?, address(&lse, 0)?);
        let (n_i, v_i) = (n as i64, v as i32);
        let name = format!("ce_fwd_{}", suffix(logits.dtype())?);
        let f = function(dev, "cross_entropy", CROSS_ENTROPY, &name)?;
        let cfg = LaunchConfig {
            grid_dim: (n.min(MAX_BLOCKS) as u32, 1, 1),
            block_dim: (threads_for(v), 1, 1),
            shared_mem_bytes: 0,
        };
        let mut a = stream.launch_builder(&f);
        a.arg(&x_ptr)
            .arg(&t_ptr)
            .arg(&loss_ptr)
            .arg(&lse_ptr)
            .arg(&n_i)
            .arg(&v_i);
        // SAFETY: the arguments match ce_fwd_* in kernels/cross_entropy.cu; the logits are (n, v)
        // contiguous of their dtype from x_at, the targets n u32 from t_at, loss and lse n f32;
        // the storages outlive the queued launch (stream order keeps them valid).
        unsafe { a.launch(cfg) }.map_err(launch_err(&name))?;
        Ok((loss, lse))
    }

    /// dlogits (n, v) in the logits' dtype from the forward's operands, its lse (n) f32 and the
    /// loss's gradient `grad` (n).
    pub fn backward(logits: &Tensor, targets: &Tensor, lse: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let Device::Cuda(dev) = logits.device() else {
            candle_core::bail!("fused cross-entropy: the logits are not on a CUDA device");
        };
        let (n, v) = logits.dims2()?;
        if targets.dims() != [n] || lse.dims() != [n] || grad.dims() != [n] || targets.dtype() != DType::U32 {
            candle_core::bail!(
                "fused cross-entropy backward: targets {:?} {:?}, lse {:?}, grad {:?} for logits {:?}",
                targets.dtype(),
                targets.dims(),
                lse.dims(),
                grad.dims(),
                logits.dims()
            );
        }
        let logits = logits.contiguous()?;
        let targets = targets.contiguous()?;
        let lse = lse.to_dtype(DType::F32)?.contiguous()?;
        let grad = grad.to_dtype(DType::F32)?.contiguous()?;
        let dx = empty(dev, logits.dtype(), (n, v))?;
        if n == 0 {
            return Ok(dx);
        }
        let stream = dev.cuda_stream();
        let (x_ptr, t_ptr, lse_ptr) = (address(&logits, 0)?, address(&targets, 0)?, address(&lse, 0)?);
        let (g_ptr, dx_ptr) = (address(&grad, 0)?, address(&dx, 0)?);
        let (n_i, v_i) = (n as i64, v as i32);
        let name = format!("ce_bwd_{}", suffix(logits.dtype())?);
        let f = function(dev, "cross_entropy", CROSS_ENTROPY, &name)?;
        let cfg = LaunchConfig {
            grid_dim: (n.min(MAX_BLOCKS) as u32, 1, 1),
            block_dim: (threads_for(v), 1, 1),
            shared_mem_bytes: 0,
        };
        let mut a = stream.launch_builder(&f);
        a.arg(&x_ptr).arg(&t_ptr).arg(&lse_ptr).arg(&g_ptr).arg(&dx_ptr);
        a.arg(&n_i).arg(&v_i);
        // SAFETY: the arguments match ce_bwd_* in kernels/cross_entropy.cu; every operand is a
        // live contiguous tensor of the shape checked above, kept alive until the launch is queued.
        unsafe { a.launch(cfg) }.map_err(launch_err(&name))?;
        Ok(dx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_cuda_the_kernel_declines_with_a_reason() {
        let why = unavailable(&Device::Cpu, DType::BF16).expect("no kernel on the CPU");
        assert!(why.contains("cuda") || why.contains("CUDA"), "{why}");
        assert_eq!(threads_for(49_152), 512);
        assert_eq!(threads_for(37), 128);
    }
}
