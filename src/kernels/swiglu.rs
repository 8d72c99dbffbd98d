//! Fused SwiGLU activation (`kernels/swiglu.cu`): h = silu(a) ⊙ b forward, and (da, db) from the
//! output's gradient g in one pass backward (math in f32, results in the operands' dtype). The
//! candle-ops closed form of `ops::swiglu` is the reference and the path everywhere this does
//! not apply.
//!
//! [`forward`] and [`backward`] answer `None` where the kernel does not apply (no `cuda` feature,
//! not CUDA tensors, the switch of [`super::set_fused_training`] off, the gate of
//! [`super::unverified`] closed, other dtypes, non-contiguous or misaligned operands) and log the
//! reason once; the caller then runs the candle ops.

use candle_core::{DType, Result, Tensor};

/// Why the kernel does not take these operands (the device and switches aside), or `None`.
fn unsupported(ts: &[&Tensor]) -> Option<String> {
    let dtype = ts[0].dtype();
    if !matches!(dtype, DType::BF16 | DType::F16 | DType::F32) {
        return Some(format!("{dtype:?} operands"));
    }
    for t in ts {
        if t.dtype() != dtype || t.dims() != ts[0].dims() {
            return Some(format!(
                "operands {:?} {:?} and {:?} {dtype:?}",
                t.dims(),
                t.dtype(),
                ts[0].dims()
            ));
        }
        if !t.is_contiguous() {
            return Some("non-contiguous operands".into());
        }
        // The kernel loads pairs of elements: each operand must start at an even element.
        if t.layout().start_offset() % 2 != 0 {
            return Some("an operand at an odd offset".into());
        }
    }
    None
}

/// Log, once per distinct reason, why a CUDA call runs the candle ops.
fn log_fallback(reason: &str) {
    super::fallback::log_once("SwiGLU activation", "candle ops", reason);
}

/// Whether the kernel takes these operands (logging why not, once).
fn applies(ts: &[&Tensor]) -> bool {
    if !cfg!(feature = "cuda") || !ts[0].device().is_cuda() || !super::flash_attention::fused_training() {
        return false;
    }
    if !super::unverified::unverified_kernels() {
        log_fallback(super::unverified::REASON);
        return false;
    }
    if let Some(reason) = unsupported(ts) {
        log_fallback(&reason);
        return false;
    }
    true
}

/// silu(a) ⊙ b, or `None` where the kernel does not apply.
pub fn forward(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if !applies(&[a, b]) {
        return Ok(None);
    }
    imp::forward(a, b).map(Some)
}

/// (da, db) from the operands and the output's gradient `g` (same shape and dtype), or `None`
/// where the kernel does not apply.
pub fn backward(a: &Tensor, b: &Tensor, g: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
    if !applies(&[a, b, g]) {
        return Ok(None);
    }
    imp::backward(a, b, g).map(Some)
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::{DType, Device, Result, Tensor};

    use crate::kernels::cuda::{SWIGLU, address, empty, function, sm_count};

    fn suffix(dtype: DType) -> &'static str {
        match dtype {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            _ => "f32",
        }
    }

    /// Enough blocks of 256 threads for one pair of elements each, at most 16 per SM (the loops
    /// are grid-stride).
    fn config(dev: &candle_core::CudaDevice, n: usize) -> LaunchConfig {
        let pairs = n / 2 + 1;
        let blocks = pairs.div_ceil(256).clamp(1, 16 * sm_count(dev));
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn launch_err(
        name: &str,
    ) -> impl Fn(candle_core::cuda_backend::cudarc::driver::DriverError) -> candle_core::Error + '_ {
        move |e| candle_core::Error::Cuda(format!("{name}: {e}").into())
    }

    fn cuda(t: &Tensor) -> Result<candle_core::CudaDevice> {
        match t.device() {
            Device::Cuda(dev) => Ok(dev.clone()),
            _ => candle_core::bail!("SwiGLU kernel: the operands are not on a CUDA device"),
        }
    }

    pub fn forward(a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let dev = cuda(a)?;
        let n = a.elem_count();
        let h = empty(&dev, a.dtype(), a.shape())?;
        if n == 0 {
            return Ok(h);
        }
        let (a_ptr, b_ptr, h_ptr) = (address(a, 0)?, address(b, 0)?, address(&h, 0)?);
        let n_i = n as i64;
        let name = format!("swiglu_fwd_{}", suffix(a.dtype()));
        let f = function(&dev, "swiglu", SWIGLU, &name)?;
        let stream = dev.cuda_stream();
        let mut l = stream.launch_builder(&f);
        l.arg(&a_ptr).arg(&b_ptr).arg(&h_ptr).arg(&n_i);
        // SAFETY: the arguments match swiglu_fwd_* in kernels/swiglu.cu; a, b and h are contiguous
        // n elements of one dtype starting at even elements (`unsupported` checked a and b; h is
        // fresh), kept alive until the launch is queued on candle's stream.
        unsafe { l.launch(config(&dev, n)) }.map_err(launch_err(&name))?;
        Ok(h)
    }

    pub fn backward(a: &Tensor, b: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
        let dev = cuda(a)?;
        let n = a.elem_count();
        let da = empty(&dev, a.dtype(), a.shape())?;
        let db = empty(&dev, a.dtype(), a.shape())?;
        if n == 0 {
            return Ok((da, db));
        }
        let (a_ptr, b_ptr, g_ptr) = (address(a, 0)?, address(b, 0)?, address(g, 0)?);
        let (da_ptr, db_ptr) = (address(&da, 0)?, address(&db, 0)?);
        let n_i = n as i64;
        let name = format!("swiglu_bwd_{}", suffix(a.dtype()));
        let f = function(&dev, "swiglu", SWIGLU, &name)?;
        let stream = dev.cuda_stream();
        let mut l = stream.launch_builder(&f);
        l.arg(&a_ptr)
            .arg(&b_ptr)
            .arg(&g_ptr)
            .arg(&da_ptr)
            .arg(&db_ptr)
            .arg(&n_i);
        // SAFETY: the arguments match swiglu_bwd_*; a, b, g, da and db are contiguous n elements of
        // one dtype at even elements, alive until the launch is queued.
        unsafe { l.launch(config(&dev, n)) }.map_err(launch_err(&name))?;
        Ok((da, db))
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Result, Tensor};

    pub fn forward(_: &Tensor, _: &Tensor) -> Result<Tensor> {
        candle_core::bail!("built without the `cuda` feature")
    }

    pub fn backward(_: &Tensor, _: &Tensor, _: &Tensor) -> Result<(Tensor, Tensor)> {
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
        let a = Tensor::randn(0f32, 1.0, (3, 7), &dev)?;
        assert!(forward(&a, &a)?.is_none());
        assert!(backward(&a, &a, &a)?.is_none());
        Ok(())
    }

    #[test]
    fn unsupported_operands_name_their_reason() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (2, 6), &dev)?;
        assert_eq!(unsupported(&[&a, &a]), None);
        let why = unsupported(&[&a, &a.to_dtype(DType::BF16)?]).expect("mixed dtypes");
        assert!(why.contains("BF16"), "{why}");
        let why = unsupported(&[&a, &a.t()?]).expect("transposed");
        assert!(why.contains("operands"), "{why}");
        let odd = a.flatten_all()?.narrow(0, 1, 6)?;
        let why = unsupported(&[&odd, &odd]).expect("odd offset");
        assert!(why.contains("odd offset"), "{why}");
        Ok(())
    }
}
