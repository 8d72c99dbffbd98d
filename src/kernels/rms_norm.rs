//! Fused RMSNorm backward (`kernels/rms_norm.cu`). For rows of x (…, d), the weight w (d) and the
//! output's gradient g (…, d), with r = rsqrt(mean(x²) + eps), n = x · r and u = g ⊙ w:
//! dx = r · (u − n · mean(u ⊙ n)) in x's dtype and dw = Σ_rows g ⊙ n in w's dtype, all math in
//! f32. The candle-ops closed form (`layer::rms_norm::rms_norm_backward_reference`, ~10 f32 ops,
//! each a launch and a full pass) is the reference and the path everywhere this does not apply.
//!
//! Two launches: one block per group of rows (rows strided over at most 4 blocks per SM) writes
//! dx and the block's column sums of g ⊙ n into a (blocks, d) f32 buffer; a second kernel adds
//! those in block order, one thread per column. No atomics: dw is the same run to run on one GPU.
//! [`backward`] answers `None` where the kernel does not apply (no `cuda` feature, not a CUDA
//! tensor, the switch of [`super::set_fused_training`] off, other dtypes, non-contiguous x or w)
//! and logs the reason once; the caller then runs the closed form.

use candle_core::{DType, Result, Tensor};

/// Why the kernel does not take these operands (the device and switch aside), or `None`.
fn unsupported(xs: &Tensor, w: &Tensor) -> Option<String> {
    let dtype = xs.dtype();
    let d = xs.dims().last().copied().unwrap_or(0);
    if !matches!(dtype, DType::BF16 | DType::F16 | DType::F32) {
        Some(format!("{dtype:?} input"))
    } else if w.dtype() != dtype {
        Some(format!("a {:?} weight on a {dtype:?} input", w.dtype()))
    } else if w.dims() != [d] || d == 0 || d > i32::MAX as usize {
        Some(format!("weight {:?} for input {:?}", w.dims(), xs.dims()))
    } else if !xs.is_contiguous() || !w.is_contiguous() {
        Some("non-contiguous input or weight".into())
    } else {
        None
    }
}

/// Log, once per distinct reason, why a CUDA call runs the candle ops.
fn log_fallback(reason: &str) {
    super::fallback::log_once("RMSNorm backward", "candle-ops closed form", reason);
}

/// (dx, dw) from the forward's input `xs` (…, d), weight `w` (d) and the output's gradient `grad`
/// (the shape of `xs`; cast to its dtype and made contiguous here), or `None` where the kernel
/// does not apply (see the module docs).
pub fn backward(xs: &Tensor, w: &Tensor, grad: &Tensor, eps: f64) -> Result<Option<(Tensor, Tensor)>> {
    if !cfg!(feature = "cuda") || !xs.device().is_cuda() || !super::flash_attention::fused_training() {
        return Ok(None);
    }
    if let Some(reason) = unsupported(xs, w) {
        log_fallback(&reason);
        return Ok(None);
    }
    if grad.dims() != xs.dims() {
        candle_core::bail!(
            "RMSNorm backward: gradient {:?} for input {:?}",
            grad.dims(),
            xs.dims()
        );
    }
    let grad = grad.to_dtype(xs.dtype())?.contiguous()?;
    imp::backward(xs, w, &grad, eps).map(Some)
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::{DType, Device, Result, Tensor};

    use crate::kernels::cuda::{RMS_NORM, address, empty, function, sm_count};

    /// Widths up to this keep the block's column sums in shared memory (32 KiB of f32).
    const SMEM_COLUMNS: usize = 8192;

    fn suffix(dtype: DType) -> &'static str {
        match dtype {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            _ => "f32",
        }
    }

    fn launch_err(
        name: &str,
    ) -> impl Fn(candle_core::cuda_backend::cudarc::driver::DriverError) -> candle_core::Error + '_ {
        move |e| candle_core::Error::Cuda(format!("{name}: {e}").into())
    }

    pub fn backward(xs: &Tensor, w: &Tensor, grad: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
        let Device::Cuda(dev) = xs.device() else {
            candle_core::bail!("RMSNorm backward: the input is not on a CUDA device");
        };
        let stream = dev.cuda_stream();
        let dtype = xs.dtype();
        let d = w.dim(0)?;
        let rows = xs.elem_count() / d;
        let dx = empty(dev, dtype, xs.shape())?;
        let dw = empty(dev, dtype, d)?;
        if rows == 0 {
            return Ok((dx, dw.zeros_like()?));
        }
        // 128 threads for the usual widths (d ≤ 1024: a few elements each), 256 beyond.
        let threads: u32 = if d <= 1024 { 128 } else { 256 };
        let blocks = rows.min(4 * sm_count(dev));
        let partial = empty(dev, DType::F32, (blocks, d))?;
        let smem = d <= SMEM_COLUMNS;
        let (x_ptr, w_ptr, g_ptr) = (address(xs, 0)?, address(w, 0)?, address(grad, 0)?);
        let (dx_ptr, dw_ptr, p_ptr) = (address(&dx, 0)?, address(&dw, 0)?, address(&partial, 0)?);
        let (rows_i, d_i, eps_f, smem_i) = (rows as i64, d as i32, eps as f32, i32::from(smem));

        let name = format!("rms_bwd_rows_{}", suffix(dtype));
        let f = function(dev, "rms_norm", RMS_NORM, &name)?;
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: if smem { (d * 4) as u32 } else { 0 },
        };
        let mut a = stream.launch_builder(&f);
        a.arg(&x_ptr).arg(&w_ptr).arg(&g_ptr).arg(&dx_ptr).arg(&p_ptr);
        a.arg(&rows_i).arg(&d_i).arg(&eps_f).arg(&smem_i);
        // SAFETY: the arguments match rms_bwd_rows_* in kernels/rms_norm.cu; x, g and dx are
        // contiguous (rows, d) of `dtype`, w and the partial sums (blocks, d) likewise, all kept
        // alive until the launch is queued; the dynamic shared memory holds d floats when `smem`.
        unsafe { a.launch(cfg) }.map_err(launch_err(&name))?;

        let name = format!("rms_bwd_dw_{}", suffix(dtype));
        let f = function(dev, "rms_norm", RMS_NORM, &name)?;
        let cfg = LaunchConfig {
            grid_dim: (d.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let blocks_i = blocks as i32;
        let mut a = stream.launch_builder(&f);
        a.arg(&p_ptr).arg(&dw_ptr).arg(&blocks_i).arg(&d_i);
        // SAFETY: the arguments match rms_bwd_dw_*: partial (blocks, d) f32, dw (d) of `dtype`.
        unsafe { a.launch(cfg) }.map_err(launch_err(&name))?;
        drop(partial);
        Ok((dx, dw))
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Result, Tensor};

    pub fn backward(_: &Tensor, _: &Tensor, _: &Tensor, _: f64) -> Result<(Tensor, Tensor)> {
        candle_core::bail!("the fused RMSNorm backward needs a build with the `cuda` feature")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn off_cuda_the_kernel_declines() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 7), &dev)?;
        let w = Tensor::ones(7, DType::F32, &dev)?;
        assert!(backward(&x, &w, &x, 1e-5)?.is_none());
        Ok(())
    }

    #[test]
    fn unsupported_operands_name_their_reason() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 5), DType::BF16, &dev)?;
        assert_eq!(unsupported(&x, &Tensor::zeros(5, DType::BF16, &dev)?), None);
        let why = unsupported(&x, &Tensor::zeros(5, DType::F32, &dev)?).expect("mixed dtypes");
        assert!(why.contains("F32 weight"), "{why}");
        let why = unsupported(&x, &Tensor::zeros(4, DType::BF16, &dev)?).expect("width");
        assert!(why.contains("weight [4]"), "{why}");
        let why = unsupported(&x.t()?, &Tensor::zeros(2, DType::BF16, &dev)?).expect("strided");
        assert!(why.contains("non-contiguous"), "{why}");
        Ok(())
    }
}
