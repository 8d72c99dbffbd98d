//! Multi-tensor optimizer kernels (`kernels/optimizer.cu`): the AdamW update of every parameter in
//! one launch, and every gradient's sum of squares (for clipping's global norm) in one launch and
//! one read back.
//!
//! Through candle ops a CUDA AdamW step is ~14 element-wise launches per parameter and the norm
//! three more, each a few microseconds of mostly idle GPU (docs/gpu.md). The references are the
//! candle-ops update in `train::optimizer::adamw` (which the CPU's in-place update equals bit for
//! bit) and `train::clip`; `tests/gpu_kernels.rs` compares them on random tensors.

use candle_core::{DType, Result, Tensor};

/// One parameter's tensors for [`adamw_step`]: f32 `p` (the master copy, or the parameter when it
/// is f32), `g`, `m`, `v`, all contiguous and of one size on one CUDA device; `out`: the bf16/f16
/// parameter to overwrite with the updated `p`, if any.
pub struct AdamWSlot<'a> {
    pub p: &'a Tensor,
    pub g: &'a Tensor,
    pub m: &'a Tensor,
    pub v: &'a Tensor,
    pub out: Option<&'a Tensor>,
    pub decay: bool,
}

/// AdamW's step constants as the kernel takes them (`inv_bc*` = 1 / (1 − βᵗ)).
#[derive(Debug, Clone, Copy)]
pub struct AdamWConsts {
    pub b1: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    pub inv_bc1: f32,
    pub inv_bc2: f32,
    pub eps: f32,
    pub lr: f32,
    pub weight_decay: f32,
}

/// Whether [`adamw_step`] takes `slot`: CUDA, f32, contiguous, equal sizes, a bf16/f16 `out`.
pub fn adamw_applies(slot: &AdamWSlot) -> bool {
    let f32_here = |t: &Tensor| t.device().is_cuda() && t.dtype() == DType::F32 && t.is_contiguous();
    let n = slot.p.elem_count();
    cfg!(feature = "cuda")
        && [slot.p, slot.g, slot.m, slot.v]
            .iter()
            .all(|t| f32_here(t) && t.elem_count() == n)
        && slot.out.is_none_or(|o| {
            o.device().is_cuda()
                && matches!(o.dtype(), DType::BF16 | DType::F16)
                && o.is_contiguous()
                && o.elem_count() == n
        })
}

/// One AdamW update of every slot (each must pass [`adamw_applies`]), in one launch.
pub fn adamw_step(slots: &[AdamWSlot], c: AdamWConsts) -> Result<()> {
    if slots.is_empty() {
        return Ok(());
    }
    imp::adamw_step(slots, c)
}

/// Σ x² of each of `tensors` (f32, contiguous, on one CUDA device), accumulated in f64.
pub fn sum_squares(tensors: &[&Tensor]) -> Result<Vec<f64>> {
    if tensors.is_empty() {
        return Ok(Vec::new());
    }
    imp::sum_squares(tensors)
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
    use candle_core::{DType, Result, Storage, Tensor};

    use super::{AdamWConsts, AdamWSlot};
    use crate::kernels::cuda::{OPTIMIZER, address, function, sm_count};

    const THREADS: u32 = 256;

    fn cuda_of(t: &Tensor) -> Result<candle_core::cuda_backend::CudaDevice> {
        match &*t.storage_and_layout().0 {
            Storage::Cuda(s) => Ok(s.device.clone()),
            _ => candle_core::bail!("multi-tensor kernel: a tensor is not on a CUDA device"),
        }
    }

    /// x blocks per slot: enough for the largest tensor to fill the GPU about twice.
    fn grid(largest: usize, n_slots: usize, sms: usize) -> (u32, u32, u32) {
        let per_slot = largest.div_ceil(THREADS as usize * 4).clamp(1, 2 * sms);
        (per_slot as u32, n_slots.min(65_535) as u32, 1)
    }

    fn f32_address(t: &Tensor) -> Result<u64> {
        if t.dtype() != DType::F32 || !t.is_contiguous() {
            candle_core::bail!("multi-tensor kernel: needs contiguous f32, got {:?}", t.dtype());
        }
        address(t, 0)
    }

    pub fn adamw_step(slots: &[AdamWSlot], c: AdamWConsts) -> Result<()> {
        let dev = cuda_of(slots[0].p)?;
        let stream = dev.cuda_stream();
        let mut table = Vec::with_capacity(slots.len() * 8);
        let mut largest = 0;
        for s in slots {
            let n = s.p.elem_count();
            largest = largest.max(n);
            let (out, kind) = match s.out {
                None => (0, 0u64),
                Some(o) if o.dtype() == DType::BF16 && o.is_contiguous() => (address(o, 0)?, 1),
                Some(o) if o.dtype() == DType::F16 && o.is_contiguous() => (address(o, 0)?, 2),
                Some(o) => candle_core::bail!("multi-tensor AdamW: cannot write a {:?} parameter", o.dtype()),
            };
            for t in [s.g, s.m, s.v] {
                if t.elem_count() != n {
                    candle_core::bail!("multi-tensor AdamW: tensors of one parameter differ in size");
                }
            }
            table.extend([
                f32_address(s.p)?,
                f32_address(s.g)?,
                f32_address(s.m)?,
                f32_address(s.v)?,
                out,
                n as u64,
                u64::from(s.decay) | (kind << 1),
                0,
            ]);
        }
        let table = stream
            .clone_htod(&table)
            .map_err(|e| candle_core::Error::Cuda(format!("AdamW table: {e}").into()))?;
        let table_ptr = table.device_ptr(&stream).0;
        let f = function(&dev, "optimizer", OPTIMIZER, "adamw_multi_tensor")?;
        let n_slots = slots.len() as i32;
        let cfg = LaunchConfig {
            grid_dim: grid(largest, slots.len(), sm_count(&dev)),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&f);
        b.arg(&table_ptr)
            .arg(&n_slots)
            .arg(&c.b1)
            .arg(&c.one_minus_b1)
            .arg(&c.b2)
            .arg(&c.one_minus_b2)
            .arg(&c.inv_bc1)
            .arg(&c.inv_bc2)
            .arg(&c.eps)
            .arg(&c.lr)
            .arg(&c.weight_decay);
        // SAFETY: the arguments match adamw_multi_tensor in kernels/optimizer.cu; every address
        // in the table points at a live contiguous tensor of `n` elements of the slot's dtype,
        // and the table lives until the launch is queued (freed stream-ordered after it).
        unsafe { b.launch(cfg) }
            .map_err(|e| candle_core::Error::Cuda(format!("adamw_multi_tensor: {e}").into()))?;
        drop(table);
        Ok(())
    }

    pub fn sum_squares(tensors: &[&Tensor]) -> Result<Vec<f64>> {
        let dev = cuda_of(tensors[0])?;
        let stream = dev.cuda_stream();
        let mut table = Vec::with_capacity(tensors.len() * 8);
        let mut largest = 0;
        for t in tensors {
            let n = t.elem_count();
            largest = largest.max(n);
            table.extend([0, f32_address(t)?, 0, 0, 0, n as u64, 0, 0]);
        }
        let err = |what: &str, e: candle_core::cuda_backend::cudarc::driver::DriverError| {
            candle_core::Error::Cuda(format!("sum of squares, {what}: {e}").into())
        };
        let table = stream.clone_htod(&table).map_err(|e| err("table", e))?;
        let sums = stream
            .alloc_zeros::<f64>(tensors.len())
            .map_err(|e| err("sums", e))?;
        let (table_ptr, sums_ptr) = (table.device_ptr(&stream).0, sums.device_ptr(&stream).0);
        let f = function(&dev, "optimizer", OPTIMIZER, "sum_squares_multi_tensor")?;
        let n_slots = tensors.len() as i32;
        let cfg = LaunchConfig {
            grid_dim: grid(largest, tensors.len(), sm_count(&dev)),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&f);
        b.arg(&table_ptr).arg(&n_slots).arg(&sums_ptr);
        // SAFETY: as in adamw_step; `sums` holds one zeroed f64 per slot.
        unsafe { b.launch(cfg) }.map_err(|e| err("launch", e))?;
        let out = stream.clone_dtoh(&sums).map_err(|e| err("read back", e))?;
        drop(table);
        Ok(out)
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Result, Tensor};

    use super::{AdamWConsts, AdamWSlot};

    pub fn adamw_step(_slots: &[AdamWSlot], _c: AdamWConsts) -> Result<()> {
        candle_core::bail!("multi-tensor AdamW needs a build with the `cuda` feature")
    }

    pub fn sum_squares(_tensors: &[&Tensor]) -> Result<Vec<f64>> {
        candle_core::bail!("multi-tensor sum of squares needs a build with the `cuda` feature")
    }
}
