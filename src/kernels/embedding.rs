//! The embedding table's gradient in one launch (`kernels/embedding.cu`): dW[v] = Σ of the output
//! gradient's rows whose id is v, summed in f32 in position order (the same run to run) and
//! written in the table's dtype, every row written (no zero fill). The reference is candle's
//! backward of `index_select` (zeros, then `index_add`), the path everywhere this does not apply.
//!
//! [`backward`] answers `None` where the kernel does not apply (no `cuda` feature, not CUDA
//! tensors, the switch of [`super::set_fused_training`] off, the gate of [`super::unverified`]
//! closed, ids not u32, other dtypes, rows too wide for the shared-memory sums) and logs the
//! reason once; the caller then runs the candle ops.

use candle_core::{DType, Result, Tensor};

/// Table rows a block owns (`ROWS` in kernels/embedding.cu).
const ROWS: usize = 8;
/// Widest row whose ROWS f32 sums fit the 48 KiB of shared memory a launch gets by default.
const MAX_D: usize = 48 * 1024 / (4 * ROWS);

/// Why the kernel does not take these operands (the device and switches aside), or `None`.
fn unsupported(ids: &Tensor, grad: &Tensor, vocab: usize) -> Option<String> {
    let dtype = grad.dtype();
    let d = grad.dims().last().copied().unwrap_or(0);
    if ids.dtype() != DType::U32 {
        Some(format!("{:?} ids", ids.dtype()))
    } else if !matches!(dtype, DType::BF16 | DType::F16 | DType::F32) {
        Some(format!("a {dtype:?} table"))
    } else if d == 0 || d > MAX_D {
        Some(format!("rows of width {d} (the kernel takes 1 to {MAX_D})"))
    } else if vocab > i32::MAX as usize {
        Some(format!("a table of {vocab} rows"))
    } else if grad.elem_count() != ids.elem_count() * d {
        Some(format!("a gradient {:?} for ids {:?}", grad.dims(), ids.dims()))
    } else if !ids.is_contiguous() || !grad.is_contiguous() {
        Some("non-contiguous ids or gradient".into())
    } else {
        None
    }
}

/// Log, once per distinct reason, why a CUDA call runs the candle ops.
fn log_fallback(reason: &str) {
    super::fallback::log_once("embedding backward", "candle ops", reason);
}

/// d loss / d table (vocab, d) from the ids (n) and the gradient of the looked-up rows (n, d),
/// or `None` where the kernel does not apply.
pub fn backward(ids: &Tensor, grad: &Tensor, vocab: usize) -> Result<Option<Tensor>> {
    if !cfg!(feature = "cuda") || !grad.device().is_cuda() || !super::flash_attention::fused_training() {
        return Ok(None);
    }
    if !super::unverified::unverified_kernels() {
        log_fallback(super::unverified::REASON);
        return Ok(None);
    }
    if let Some(reason) = unsupported(ids, grad, vocab) {
        log_fallback(&reason);
        return Ok(None);
    }
    imp::backward(ids, grad, vocab).map(Some)
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::{DType, Device, Result, Tensor};

    use super::ROWS;
    use crate::kernels::cuda::{EMBEDDING, address, empty, function};

    pub fn backward(ids: &Tensor, grad: &Tensor, vocab: usize) -> Result<Tensor> {
        let Device::Cuda(dev) = grad.device() else {
            candle_core::bail!("embedding backward: the gradient is not on a CUDA device");
        };
        let dtype = grad.dtype();
        let d = grad.dims().last().copied().unwrap_or(0);
        let dw = empty(dev, dtype, (vocab, d))?;
        if vocab == 0 {
            return Ok(dw);
        }
        let n = ids.elem_count();
        let (ids_ptr, g_ptr, dw_ptr) = (address(ids, 0)?, address(grad, 0)?, address(&dw, 0)?);
        let (n_i, vocab_i, d_i) = (n as i64, vocab as i32, d as i32);
        let name = format!(
            "emb_bwd_{}",
            match dtype {
                DType::BF16 => "bf16",
                DType::F16 => "f16",
                _ => "f32",
            }
        );
        let f = function(dev, "embedding", EMBEDDING, &name)?;
        let cfg = LaunchConfig {
            grid_dim: (vocab.div_ceil(ROWS) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: (ROWS * d * 4) as u32,
        };
        let stream = dev.cuda_stream();
        let mut l = stream.launch_builder(&f);
        l.arg(&ids_ptr)
            .arg(&g_ptr)
            .arg(&dw_ptr)
            .arg(&n_i)
            .arg(&vocab_i)
            .arg(&d_i);
        // SAFETY: the arguments match emb_bwd_* in kernels/embedding.cu: ids (n) u32 and the
        // gradient (n, d) contiguous (`unsupported` checked), dw a fresh (vocab, d) of the same
        // dtype, ROWS · d ≤ 12,288 f32 of dynamic shared memory (48 KiB), 256 threads; all alive
        // until the launch is queued on candle's stream.
        unsafe { l.launch(cfg) }.map_err(|e| candle_core::Error::Cuda(format!("{name}: {e}").into()))?;
        Ok(dw)
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Result, Tensor};

    pub fn backward(_: &Tensor, _: &Tensor, _: usize) -> Result<Tensor> {
        candle_core::bail!("built without the `cuda` feature")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn off_cuda_the_kernel_declines() -> Result<()> {
        let dev = Device::Cpu;
        let ids = Tensor::new(&[1u32, 0, 1], &dev)?;
        let g = Tensor::randn(0f32, 1.0, (3, 4), &dev)?;
        assert!(backward(&ids, &g, 2)?.is_none());
        Ok(())
    }

    #[test]
    fn unsupported_operands_name_their_reason() -> Result<()> {
        let dev = Device::Cpu;
        let ids = Tensor::new(&[1u32, 0, 1], &dev)?;
        let g = Tensor::randn(0f32, 1.0, (3, 4), &dev)?;
        assert_eq!(unsupported(&ids, &g, 2), None);
        let why = unsupported(&ids.to_dtype(DType::I64)?, &g, 2).expect("i64 ids");
        assert!(why.contains("I64 ids"), "{why}");
        let wide = Tensor::zeros((3, MAX_D + 1), DType::F32, &dev)?;
        let why = unsupported(&ids, &wide, 2).expect("too wide");
        assert!(why.contains("width"), "{why}");
        let why = unsupported(&ids, &g.narrow(1, 0, 3)?, 2).expect("strided");
        assert!(why.contains("non-contiguous"), "{why}");
        Ok(())
    }
}
