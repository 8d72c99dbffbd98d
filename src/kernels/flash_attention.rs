//! Fused training attention (`kernels/flash_attention.cu`): a flash-attention-2 forward that
//! writes O and each row's logsumexp L, and a backward that recomputes the probabilities from q,
//! k and L, so no (g·t, kk) score, mask or probability tensor is ever materialized.
//!
//! The function is `RecomputingAttention`'s (`ops::sdpa`), which is also the reference the GPU
//! tests compare against: q (b, nkv, g·t, dq) pre-scaled, the g query heads of a KV group folded
//! into rows (row r is query position r mod t); k (b, nkv, kk, dq); v (b, nkv, kk, dv) with
//! kk = n_null + kt; with `causal`, query i sees key columns j ≤ i + kk − t (the n_null null
//! columns first, always visible, then keys up to the query's own absolute position kt − t + i).
//! → O (b, nkv, g·t, dv) in the inputs' dtype, L (b, nkv, g·t) f32.
//!
//! bf16 and f16 run on tensor cores for head dims dq, dv ∈ {16, 32, 64, 128}; f32 runs simpler
//! SIMT kernels (what the tests compare at tight tolerances) for the same head dims.
//! [`forward`] answers `None` where the kernel does not apply (no `cuda` feature, not a CUDA
//! tensor, the switch off, another dtype or head dim) and logs the reason once; the caller then
//! runs the candle-ops path. dQ has its own kernel (one block per query tile, no atomics), so the
//! gradients are deterministic run to run.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Result, Tensor};

static FUSED_TRAINING: AtomicBool = AtomicBool::new(true);

/// Turn the fused training attention off (or back on) for the whole process: the trainer sets it
/// from `train.fused`, benchmarks and tests time or compare the candle-ops path against it.
/// `CARAMBA_FUSED_TRAINING=0` keeps it off whatever this says.
pub fn set_fused_training(on: bool) {
    FUSED_TRAINING.store(on, Ordering::Relaxed);
}

/// Whether the switch is on and `CARAMBA_FUSED_TRAINING` is not `0`.
pub fn fused_training() -> bool {
    static ENV_OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let env_off = *ENV_OFF.get_or_init(|| {
        std::env::var("CARAMBA_FUSED_TRAINING").is_ok_and(|v| matches!(v.trim(), "0" | "false" | "off"))
    });
    FUSED_TRAINING.load(Ordering::Relaxed) && !env_off
}

/// Head dims the kernels are built for.
pub const HEAD_DIMS: [usize; 4] = [16, 32, 64, 128];

/// Why training attention on `device` in `dtype` runs the candle-ops path, or `None` where the
/// fused kernel runs (for head dims in [`HEAD_DIMS`]): the trainer's start line says which.
pub fn unavailable(device: &Device, dtype: DType) -> Option<String> {
    if !cfg!(feature = "cuda") {
        return Some("built without the `cuda` feature".into());
    }
    if !device.is_cuda() {
        return Some(format!("{} device", device_name(device)));
    }
    if !fused_training() {
        return Some("switched off (train.fused: false or CARAMBA_FUSED_TRAINING=0)".into());
    }
    if !matches!(dtype, DType::BF16 | DType::F16 | DType::F32) {
        return Some(format!("{dtype:?}"));
    }
    None
}

/// The trainer's description of its attention path, e.g. "fused flash kernel (CUDA bf16)".
pub fn training_path(device: &Device, dtype: DType) -> String {
    match unavailable(device, dtype) {
        None => format!("fused flash kernel (CUDA {})", dtype.as_str()),
        Some(reason) => format!("composite candle ops ({reason})"),
    }
}

fn device_name(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "CPU",
        Device::Cuda(_) => "CUDA",
        Device::Metal(_) => "Metal",
    }
}

/// Why the kernel does not take these operands (the switch and the device aside), or `None`.
fn unsupported(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: usize,
    t: usize,
    causal: bool,
) -> Result<Option<String>> {
    let (b, nkv, rows, dq) = q.dims4()?;
    let (kb, knkv, kk, kdq) = k.dims4()?;
    let (vb, vnkv, vkk, dv) = v.dims4()?;
    let dtype = q.dtype();
    let why = if !matches!(dtype, DType::BF16 | DType::F16 | DType::F32) {
        format!("{dtype:?} operands")
    } else if k.dtype() != dtype || v.dtype() != dtype {
        format!("mixed dtypes q {dtype:?}, k {:?}, v {:?}", k.dtype(), v.dtype())
    } else if !HEAD_DIMS.contains(&dq) || !HEAD_DIMS.contains(&dv) {
        format!("head dims dq {dq}, dv {dv} (the kernel takes 16, 32, 64, 128)")
    } else if (kb, knkv, kdq) != (b, nkv, dq) || (vb, vnkv, vkk) != (b, nkv, kk) || g * t != rows || t == 0 {
        format!(
            "shapes q {:?}, k {:?}, v {:?} with g {g}, t {t}",
            q.dims(),
            k.dims(),
            v.dims()
        )
    } else if kk == 0 || (causal && kk < t) {
        format!("{kk} key columns for {t} queries")
    } else if b * nkv > 65_535 || g > 65_535 || t.div_ceil(64) > i32::MAX as usize {
        format!("grid of {b}·{nkv} heads × {g} × {t}")
    } else if rows
        .checked_mul(b * nkv * dq.max(dv))
        .is_none_or(|n| n > i32::MAX as usize)
        || (b * nkv * kk)
            .checked_mul(dq.max(dv))
            .is_none_or(|n| n > i32::MAX as usize)
    {
        "over 2³¹ elements".into()
    } else {
        return Ok(None);
    };
    Ok(Some(why))
}

/// Log, once per distinct reason, why a CUDA call runs the candle ops.
fn log_fallback(reason: &str) {
    super::fallback::log_once("training attention", "composite candle ops", reason);
}

/// The fused forward: (O, L), or `None` where the kernel does not apply (see the module docs).
pub fn forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: usize,
    t: usize,
    causal: bool,
) -> Result<Option<(Tensor, Tensor)>> {
    if !cfg!(feature = "cuda") || !q.device().is_cuda() || !fused_training() {
        return Ok(None);
    }
    if let Some(reason) = unsupported(q, k, v, g, t, causal)? {
        log_fallback(&reason);
        return Ok(None);
    }
    imp::forward(q, k, v, g, t, causal).map(Some)
}

/// The fused backward: [dq, dk, dv] in the inputs' dtype, from the forward's operands, its output
/// `o`, the output's gradient `grad` and the forward's L. Call it only where [`forward`] ran.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    grad: &Tensor,
    lse: &Tensor,
    g: usize,
    t: usize,
    causal: bool,
) -> Result<[Tensor; 3]> {
    if let Some(reason) = unsupported(q, k, v, g, t, causal)? {
        candle_core::bail!("fused attention backward: {reason}");
    }
    imp::backward(q, k, v, o, &grad.to_dtype(q.dtype())?, lse, g, t, causal)
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda_backend::CudaDevice;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::{DType, Device, Result, Tensor};

    use crate::kernels::cuda::{FLASH_ATTENTION, address, empty, function};

    /// Query rows of a forward / dQ block (4 warps of 16), as in the .cu's `Tiles`.
    const BR: usize = 64;

    fn cuda_device(t: &Tensor) -> Result<CudaDevice> {
        match t.device() {
            Device::Cuda(d) => Ok(d.clone()),
            _ => candle_core::bail!("fused attention: an operand is not on a CUDA device"),
        }
    }

    /// `t` contiguous and 16-byte aligned (the tensor-core kernels move 16-byte chunks).
    fn operand(t: &Tensor) -> Result<Tensor> {
        let t = t.contiguous()?;
        if address(&t, 0)? % 16 == 0 {
            Ok(t)
        } else {
            t.copy()
        }
    }

    fn suffix(dtype: DType) -> &'static str {
        match dtype {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            _ => "f32",
        }
    }

    /// Keys of a dK/dV block and its threads, as in the .cu's `Tiles` (2 warps when a head dim is 128).
    fn kv_block(dq: usize, dv: usize) -> (usize, u32) {
        if dq > 64 || dv > 64 { (32, 64) } else { (64, 128) }
    }

    fn launch_err(
        name: &str,
    ) -> impl Fn(candle_core::cuda_backend::cudarc::driver::DriverError) -> candle_core::Error + '_ {
        move |e| candle_core::Error::Cuda(format!("{name}: {e}").into())
    }

    pub fn forward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        g: usize,
        t: usize,
        causal: bool,
    ) -> Result<(Tensor, Tensor)> {
        let dev = cuda_device(q)?;
        let stream = dev.cuda_stream();
        let (q, k, v) = (operand(q)?, operand(k)?, operand(v)?);
        let (b, nkv, rows, dq) = q.dims4()?;
        let (kk, dv) = (k.dim(2)?, v.dim(3)?);
        let dtype = q.dtype();
        let o = empty(&dev, dtype, (b, nkv, rows, dv))?;
        let lse = empty(&dev, DType::F32, (b, nkv, rows))?;
        let (q_ptr, k_ptr, v_ptr) = (address(&q, 0)?, address(&k, 0)?, address(&v, 0)?);
        let (o_ptr, lse_ptr) = (address(&o, 0)?, address(&lse, 0)?);
        let (t_i, g_i, kk_i, causal_i) = (t as i32, g as i32, kk as i32, i32::from(causal));
        let bh = (b * nkv) as u32;
        if dtype == DType::F32 {
            let f = function(&dev, "flash_attention", FLASH_ATTENTION, "fa_fwd_f32")?;
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(8) as u32, bh, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let (dq_i, dv_i) = (dq as i32, dv as i32);
            let mut a = stream.launch_builder(&f);
            a.arg(&q_ptr).arg(&k_ptr).arg(&v_ptr).arg(&o_ptr).arg(&lse_ptr);
            a.arg(&t_i)
                .arg(&g_i)
                .arg(&kk_i)
                .arg(&causal_i)
                .arg(&dq_i)
                .arg(&dv_i);
            // SAFETY: the arguments match fa_fwd_f32; every pointer is a live contiguous tensor of
            // the shape the module docs give, kept alive until the launch is queued.
            unsafe { a.launch(cfg) }.map_err(launch_err("fa_fwd_f32"))?;
        } else {
            let name = format!("fa_fwd_{}_q{dq}_v{dv}", suffix(dtype));
            let f = function(&dev, "flash_attention", FLASH_ATTENTION, &name)?;
            let cfg = LaunchConfig {
                grid_dim: (t.div_ceil(BR) as u32, g as u32, bh),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut a = stream.launch_builder(&f);
            a.arg(&q_ptr).arg(&k_ptr).arg(&v_ptr).arg(&o_ptr).arg(&lse_ptr);
            a.arg(&t_i).arg(&g_i).arg(&kk_i).arg(&causal_i);
            // SAFETY: as above, for the tensor-core forward; the operands are 16-byte aligned.
            unsafe { a.launch(cfg) }.map_err(launch_err(&name))?;
        }
        Ok((o, lse))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        grad: &Tensor,
        lse: &Tensor,
        g: usize,
        t: usize,
        causal: bool,
    ) -> Result<[Tensor; 3]> {
        let dev = cuda_device(q)?;
        let stream = dev.cuda_stream();
        let (q, k, v) = (operand(q)?, operand(k)?, operand(v)?);
        let (o, grad) = (operand(o)?, operand(grad)?);
        let lse = lse.contiguous()?;
        let (b, nkv, rows, dq) = q.dims4()?;
        let (kk, dv) = (k.dim(2)?, v.dim(3)?);
        let dtype = q.dtype();
        if o.dims() != [b, nkv, rows, dv] || grad.dims() != o.dims() || lse.dims() != [b, nkv, rows] {
            candle_core::bail!(
                "fused attention backward: o {:?}, grad {:?}, lse {:?} for q {:?}",
                o.dims(),
                grad.dims(),
                lse.dims(),
                q.dims()
            );
        }
        let o = o.to_dtype(dtype)?;
        let bh = (b * nkv) as u32;
        let (t_i, g_i, kk_i, causal_i) = (t as i32, g as i32, kk as i32, i32::from(causal));

        // D = rowsum(dO ⊙ O)
        let dsum = empty(&dev, DType::F32, (b, nkv, rows))?;
        let all_rows = b * nkv * rows;
        let (do_ptr, o_ptr, dsum_ptr, lse_ptr) = (
            address(&grad, 0)?,
            address(&o, 0)?,
            address(&dsum, 0)?,
            address(&lse, 0)?,
        );
        {
            let name = format!("fa_bwd_dot_{}", suffix(dtype));
            let f = function(&dev, "flash_attention", FLASH_ATTENTION, &name)?;
            let cfg = LaunchConfig {
                grid_dim: (all_rows.div_ceil(8) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let (rows_i, dv_i) = (all_rows as i32, dv as i32);
            let mut a = stream.launch_builder(&f);
            a.arg(&do_ptr).arg(&o_ptr).arg(&dsum_ptr).arg(&rows_i).arg(&dv_i);
            // SAFETY: dO and O are (rows, dv) of `dtype`, dsum (rows) f32.
            unsafe { a.launch(cfg) }.map_err(launch_err(&name))?;
        }

        let dq_t = empty(&dev, dtype, (b, nkv, rows, dq))?;
        let dk_t = empty(&dev, dtype, (b, nkv, kk, dq))?;
        let dv_t = empty(&dev, dtype, (b, nkv, kk, dv))?;
        let (q_ptr, k_ptr, v_ptr) = (address(&q, 0)?, address(&k, 0)?, address(&v, 0)?);
        let (dq_ptr, dk_ptr, dv_ptr) = (address(&dq_t, 0)?, address(&dk_t, 0)?, address(&dv_t, 0)?);
        if dtype == DType::F32 {
            let (dq_i, dv_i) = (dq as i32, dv as i32);
            let f = function(&dev, "flash_attention", FLASH_ATTENTION, "fa_bwd_dq_f32")?;
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(8) as u32, bh, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut a = stream.launch_builder(&f);
            a.arg(&q_ptr)
                .arg(&k_ptr)
                .arg(&v_ptr)
                .arg(&do_ptr)
                .arg(&lse_ptr)
                .arg(&dsum_ptr)
                .arg(&dq_ptr);
            a.arg(&t_i)
                .arg(&g_i)
                .arg(&kk_i)
                .arg(&causal_i)
                .arg(&dq_i)
                .arg(&dv_i);
            // SAFETY: the arguments match fa_bwd_dq_f32 (shapes in the module docs).
            unsafe { a.launch(cfg) }.map_err(launch_err("fa_bwd_dq_f32"))?;

            let f = function(&dev, "flash_attention", FLASH_ATTENTION, "fa_bwd_dkv_f32")?;
            let cfg = LaunchConfig {
                grid_dim: (kk.div_ceil(8) as u32, bh, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut a = stream.launch_builder(&f);
            a.arg(&q_ptr)
                .arg(&k_ptr)
                .arg(&v_ptr)
                .arg(&do_ptr)
                .arg(&lse_ptr)
                .arg(&dsum_ptr);
            a.arg(&dk_ptr).arg(&dv_ptr);
            a.arg(&t_i)
                .arg(&g_i)
                .arg(&kk_i)
                .arg(&causal_i)
                .arg(&dq_i)
                .arg(&dv_i);
            // SAFETY: the arguments match fa_bwd_dkv_f32.
            unsafe { a.launch(cfg) }.map_err(launch_err("fa_bwd_dkv_f32"))?;
        } else {
            let sfx = format!("{}_q{dq}_v{dv}", suffix(dtype));
            let name = format!("fa_bwd_dq_{sfx}");
            let f = function(&dev, "flash_attention", FLASH_ATTENTION, &name)?;
            let cfg = LaunchConfig {
                grid_dim: (t.div_ceil(BR) as u32, g as u32, bh),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut a = stream.launch_builder(&f);
            a.arg(&q_ptr)
                .arg(&k_ptr)
                .arg(&v_ptr)
                .arg(&do_ptr)
                .arg(&lse_ptr)
                .arg(&dsum_ptr)
                .arg(&dq_ptr);
            a.arg(&t_i).arg(&g_i).arg(&kk_i).arg(&causal_i);
            // SAFETY: the arguments match fa_bwd_dq_*; the operands are 16-byte aligned.
            unsafe { a.launch(cfg) }.map_err(launch_err(&name))?;

            let name = format!("fa_bwd_dkv_{sfx}");
            let f = function(&dev, "flash_attention", FLASH_ATTENTION, &name)?;
            let (bk, threads) = kv_block(dq, dv);
            let cfg = LaunchConfig {
                grid_dim: (kk.div_ceil(bk) as u32, bh, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut a = stream.launch_builder(&f);
            a.arg(&q_ptr)
                .arg(&k_ptr)
                .arg(&v_ptr)
                .arg(&do_ptr)
                .arg(&lse_ptr)
                .arg(&dsum_ptr);
            a.arg(&dk_ptr).arg(&dv_ptr);
            a.arg(&t_i).arg(&g_i).arg(&kk_i).arg(&causal_i);
            // SAFETY: the arguments match fa_bwd_dkv_*; the operands are 16-byte aligned.
            unsafe { a.launch(cfg) }.map_err(launch_err(&name))?;
        }
        Ok([dq_t, dk_t, dv_t])
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Result, Tensor};

    pub fn forward(
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: usize,
        _: usize,
        _: bool,
    ) -> Result<(Tensor, Tensor)> {
        candle_core::bail!("the fused training attention needs a build with the `cuda` feature")
    }

    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: usize,
        _: usize,
        _: bool,
    ) -> Result<[Tensor; 3]> {
        candle_core::bail!("the fused training attention needs a build with the `cuda` feature")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_cuda_the_kernel_declines_and_the_trainer_line_says_why() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 1, 6, 16), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (1, 1, 3, 16), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (1, 1, 3, 16), &dev)?;
        assert!(forward(&q, &k, &v, 2, 3, true)?.is_none());
        let line = training_path(&dev, DType::BF16);
        assert!(line.starts_with("composite candle ops ("), "{line}");
        Ok(())
    }

    #[test]
    fn unsupported_shapes_name_their_reason() -> Result<()> {
        let dev = Device::Cpu;
        let t = |d: &[usize]| Tensor::zeros(d, DType::F32, &dev);
        let (q, k) = (t(&[1, 1, 4, 64])?, t(&[1, 1, 4, 64])?);
        assert_eq!(unsupported(&q, &k, &t(&[1, 1, 4, 64])?, 1, 4, true)?, None);
        let why = unsupported(&q, &k, &t(&[1, 1, 4, 48])?, 1, 4, true)?.expect("dv 48");
        assert!(why.contains("dv 48"), "{why}");
        let why = unsupported(&q, &t(&[1, 1, 3, 64])?, &t(&[1, 1, 3, 64])?, 1, 4, true)?.expect("kk < t");
        assert!(why.contains("3 key columns"), "{why}");
        Ok(())
    }
}
