//! Fused T = 1 attention over the KV cache (`kernels/decode_attention.cu`): standard, GQA and
//! Decoupled Bottleneck Attention, on plain (f32/f16/bf16) and quantized (q8_0/q4_0) storage.
//!
//! `score_j = s_sem·⟨q_sem, k_sem_j⟩ + s_geo·⟨q_geo, k_geo_j⟩`, `out = softmax(score)·V`, with an
//! optional null key/value that every query sees. Standard attention is `sem_dim = 0`. The
//! reference is `ops::sdpa::grouped_attention` on the same (dequantized) tensors.
//!
//! [`decode_attention`] answers `None` where the kernel does not apply (no `cuda` feature, a CPU
//! tensor, more than one query position, head sizes that are not multiples of 8, over 256 wide):
//! the caller then runs the candle-ops path.

use candle_core::{DType, Result, Tensor};

use crate::cache::CacheKind;

/// Softmax scales of the semantic and geometric key segments (`1/√dim` each for DBA).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeScales {
    pub sem: f32,
    pub geo: f32,
}

/// How a key row splits: the first `sem_dim` values are semantic, the next `geo_dim` geometric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySegments {
    pub sem_dim: usize,
    pub geo_dim: usize,
}

/// One quantized cache stream on the device: `data` is U8, row `j` of KV head `h` (h over
/// batch × KV heads) at byte `h·head_stride + j·row_stride`, rows laid out by
/// [`super::quantize_rows`].
#[derive(Debug, Clone)]
pub struct QuantSegment {
    pub data: Tensor,
    pub kind: CacheKind,
    pub dim: usize,
    pub head_stride: usize,
    pub row_stride: usize,
}

static FUSED_DECODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turn the fused decode off (or back on) for the whole process: benchmarks time the candle-ops
/// path against it in one run.
pub fn set_fused_decode(on: bool) {
    FUSED_DECODE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Longest context the kernel takes (1024 splits of at most 1024 positions).
pub const MAX_CONTEXT: usize = 1 << 20;

/// Widest head segment the kernel takes (one 8-value chunk per lane of a warp).
pub const MAX_HEAD_DIM: usize = 256;

/// Fused decode over the plain cache. q: (b, n_heads, 1, dk) pre-RoPE'd; k: (b, n_kv, len, dk) and
/// v: (b, n_kv, len, dv), views of the cache (unit last stride), f32/f16/bf16 alike; `null`: the
/// learned (n_kv, dk) key and (n_kv, dv) value. Returns (b, n_heads, 1, dv) in q's dtype, or
/// `None` where the kernel does not apply.
pub fn decode_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: KeySegments,
    scales: DecodeScales,
    null: Option<(&Tensor, &Tensor)>,
) -> Result<Option<Tensor>> {
    if !cfg!(feature = "cuda")
        || !q.device().is_cuda()
        || !FUSED_DECODE.load(std::sync::atomic::Ordering::Relaxed)
    {
        return Ok(None);
    }
    let (b, nh, t, dk) = q.dims4()?;
    let (_, nkv, len, kdk) = k.dims4()?;
    let dv = v.dim(3)?;
    let fits = |d: usize| d % 8 == 0 && d <= MAX_HEAD_DIM;
    let plain = |t: &Tensor| matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16);
    if t != 1
        || len == 0
        || len > MAX_CONTEXT
        || kdk != dk
        || segments.sem_dim + segments.geo_dim != dk
        || !fits(segments.sem_dim)
        || !fits(segments.geo_dim)
        || !fits(dv)
        || nkv == 0
        || nh % nkv != 0
        || k.dtype() != v.dtype()
        || !plain(k)
    {
        return Ok(None);
    }
    let (Some(ks), Some(vs)) = (row_strides(k)?, row_strides(v)?) else {
        return Ok(None);
    };
    let seg = |t: &Tensor, (head, row): (usize, usize), extra: usize, dim: usize| RawSegment {
        tensor: t.clone(),
        extra,
        head_stride: head * t.dtype().size_in_bytes(),
        row_stride: row * t.dtype().size_in_bytes(),
        dim,
    };
    let kernel = match k.dtype() {
        DType::F32 => "decode_partial_f32",
        DType::F16 => "decode_partial_f16",
        _ => "decode_partial_bf16",
    };
    let launch = Launch {
        kernel,
        k_sem: seg(k, ks, 0, segments.sem_dim),
        k_geo: seg(k, ks, segments.sem_dim, segments.geo_dim),
        v: seg(v, vs, 0, dv),
        batch: b,
        n_kv: nkv,
        n_heads: nh,
        len,
        scales,
    };
    // The plain kernels read q in the cache's dtype.
    let out = launch.run(&q.to_dtype(k.dtype())?, null)?;
    out.to_dtype(q.dtype()).map(Some)
}

/// Fused decode over quantized streams: k_sem (absent for standard attention), k_geo, v, each
/// with its own kind (q8_0 or q4_0; supported mixes: all q8_0, all q4_0, K q8_0 + V q4_0, and
/// sem q4_0 + geo q8_0 + V q4_0). q: (b, n_heads, 1, dk). Returns (b, n_heads, 1, dv) in q's dtype.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention_quantized(
    q: &Tensor,
    k_sem: Option<&QuantSegment>,
    k_geo: &QuantSegment,
    v: &QuantSegment,
    n_kv: usize,
    len: usize,
    scales: DecodeScales,
    null: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    let (b, nh, t, dk) = q.dims4()?;
    let sem_kind = k_sem.map_or(k_geo.kind, |s| s.kind);
    let mix = match (sem_kind, k_geo.kind, v.kind) {
        (CacheKind::Q8_0, CacheKind::Q8_0, CacheKind::Q8_0) => "q8_0",
        (CacheKind::Q4_0, CacheKind::Q4_0, CacheKind::Q4_0) => "q4_0",
        (CacheKind::Q8_0, CacheKind::Q8_0, CacheKind::Q4_0) => "q8_0_q8_0_q4_0",
        (CacheKind::Q4_0, CacheKind::Q8_0, CacheKind::Q4_0) => "q4_0_q8_0_q4_0",
        other => candle_core::bail!("no fused decode kernel for (k_sem, k_geo, v) = {other:?}"),
    };
    let q_name = match q.dtype() {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F32 => "f32",
        other => candle_core::bail!("fused decode queries are f32, f16 or bf16, not {other:?}"),
    };
    let kernel = quantized_kernel_name(mix, q_name)?;
    let sem_dim = k_sem.map_or(0, |s| s.dim);
    let blocks_ok = |d: usize| d % 32 == 0 && d <= MAX_HEAD_DIM;
    if t != 1
        || sem_dim + k_geo.dim != dk
        || !blocks_ok(sem_dim)
        || !blocks_ok(k_geo.dim)
        || !blocks_ok(v.dim)
    {
        candle_core::bail!(
            "quantized decode: one query position and head segments that are multiples of 32 up to {MAX_HEAD_DIM} (q {:?}, sem {sem_dim}, geo {}, v {})",
            q.dims(),
            k_geo.dim,
            v.dim
        );
    }
    if !q.device().is_cuda() {
        candle_core::bail!("the fused quantized decode runs on CUDA devices only");
    }
    let raw = |s: &QuantSegment| RawSegment {
        tensor: s.data.clone(),
        extra: 0,
        head_stride: s.head_stride,
        row_stride: s.row_stride,
        dim: s.dim,
    };
    let launch = Launch {
        kernel,
        k_sem: k_sem.map_or_else(|| RawSegment { dim: 0, ..raw(k_geo) }, raw),
        k_geo: raw(k_geo),
        v: raw(v),
        batch: b,
        n_kv,
        n_heads: nh,
        len,
        scales,
    };
    launch.run(q, null)
}

/// `decode_partial_<mix>_<q dtype>`, as instantiated in kernels/decode_attention.cu.
fn quantized_kernel_name(mix: &str, q: &str) -> Result<&'static str> {
    const NAMES: [&str; 12] = [
        "decode_partial_q8_0_f32",
        "decode_partial_q8_0_f16",
        "decode_partial_q8_0_bf16",
        "decode_partial_q4_0_f32",
        "decode_partial_q4_0_f16",
        "decode_partial_q4_0_bf16",
        "decode_partial_q8_0_q8_0_q4_0_f32",
        "decode_partial_q8_0_q8_0_q4_0_f16",
        "decode_partial_q8_0_q8_0_q4_0_bf16",
        "decode_partial_q4_0_q8_0_q4_0_f32",
        "decode_partial_q4_0_q8_0_q4_0_f16",
        "decode_partial_q4_0_q8_0_q4_0_bf16",
    ];
    let want = format!("decode_partial_{mix}_{q}");
    NAMES
        .iter()
        .copied()
        .find(|n| *n == want)
        .ok_or_else(|| candle_core::Error::Msg(format!("no kernel {want}")))
}

/// (head stride, row stride) in elements of a (b, n_kv, len, d) view whose rows are contiguous
/// and whose batch stride is n_kv head strides (the cache's buffers are); `None` otherwise.
fn row_strides(t: &Tensor) -> Result<Option<(usize, usize)>> {
    let (_, nkv, len, _) = t.dims4()?;
    let s = t.stride();
    let ok = s[3] == 1 && (nkv <= 1 || s[0] == nkv * s[1]) && (len <= 1 || s[2] > 0);
    Ok(ok.then_some((s[1], s[2])))
}

// The fields are read by the CUDA launcher only.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct RawSegment {
    tensor: Tensor,
    /// Elements past the view's start (the geometric segment of a [sem ‖ geo] row).
    extra: usize,
    head_stride: usize,
    row_stride: usize,
    dim: usize,
}

// The fields are read by the CUDA launcher only.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct Launch {
    kernel: &'static str,
    k_sem: RawSegment,
    k_geo: RawSegment,
    v: RawSegment,
    batch: usize,
    n_kv: usize,
    n_heads: usize,
    len: usize,
    scales: DecodeScales,
}

impl Launch {
    fn run(self, q: &Tensor, null: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
        let out_dtype = q.dtype();
        let (b, nh, dv) = (self.batch, self.n_heads, self.v.dim);
        let q = q.contiguous()?;
        let null = match null {
            Some((k, v)) => Some((
                k.to_dtype(DType::F32)?.contiguous()?,
                v.to_dtype(DType::F32)?.contiguous()?,
            )),
            None => None,
        };
        let op = DecodeOp {
            launch: self,
            null,
            out_dtype,
        };
        q.apply_op1_no_bwd(&op)?.reshape((b, nh, 1, dv))
    }
}

// The fields are read by the CUDA launcher only.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct DecodeOp {
    launch: Launch,
    null: Option<(Tensor, Tensor)>,
    out_dtype: DType,
}

impl candle_core::CustomOp1 for DecodeOp {
    fn name(&self) -> &'static str {
        "fused-decode-attention"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        candle_core::bail!("the fused decode kernel runs on CUDA; the CPU uses the candle-ops path")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        cuda_launch::run(self, q, layout)
    }
}

#[cfg(feature = "cuda")]
mod cuda_launch {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
    use candle_core::{CudaStorage, DType, Layout, Result, Shape};

    use super::DecodeOp;
    use crate::kernels::cuda::{DECODE_ATTENTION, address, function, sm_count};

    const THREADS: u32 = 128;
    const COMBINE_THREADS: u32 = 256;
    const WARPS: usize = 4;
    const MAXG: usize = 8;
    const MAX_SPLITS: usize = 1024;

    /// Positions per split: about 16 blocks per multiprocessor, so that the last of several waves
    /// leaves little of the GPU idle; at least 64 positions and at most 1024 per block (its scores
    /// then fit in 32 KB of shared memory).
    fn split_len(len: usize, blocks_per_split: usize, sms: usize) -> usize {
        let want_splits = (16 * sms).div_ceil(blocks_per_split.max(1)).max(1);
        // The combine kernel holds one weight per split in shared memory (MAX_SPLITS).
        let at_least = len.div_ceil(MAX_SPLITS).next_multiple_of(64);
        len.div_ceil(want_splits)
            .next_multiple_of(64)
            .clamp(64, 1024)
            .max(at_least)
    }

    /// Query heads per block: 4 when the group fits (fewer registers, more blocks per SM), else 8.
    fn heads_per_block(group: usize) -> usize {
        if group <= 4 { 4 } else { MAXG }
    }

    pub fn run(op: &DecodeOp, q: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let l = &op.launch;
        let dev = q.device().clone();
        let stream = dev.cuda_stream();
        let (b, nh, nkv) = (l.batch, l.n_heads, l.n_kv);
        let group = nh / nkv;
        let per_block = heads_per_block(group);
        let n_sub = group.div_ceil(per_block);
        let dv = l.v.dim;
        let (sem_dim, geo_dim) = (l.k_sem.dim, l.k_geo.dim);
        let blocks = b * nkv * n_sub;
        let split = split_len(l.len, blocks, sm_count(&dev));
        let splits = l.len.div_ceil(split);
        if split > 1024 {
            candle_core::bail!(
                "fused decode: {} positions exceed the kernel's {} (1024 splits of 1024)",
                l.len,
                MAX_SPLITS * 1024
            );
        }
        let bh = b * nh;

        let q_ptr = match op.out_dtype {
            DType::BF16 => q.as_cuda_slice::<half::bf16>()?.device_ptr(&stream).0,
            DType::F16 => q.as_cuda_slice::<half::f16>()?.device_ptr(&stream).0,
            _ => q.as_cuda_slice::<f32>()?.device_ptr(&stream).0,
        } + (layout.start_offset() * op.out_dtype.size_in_bytes()) as u64;
        let ks_ptr = address(&l.k_sem.tensor, l.k_sem.extra)?;
        let kg_ptr = address(&l.k_geo.tensor, l.k_geo.extra)?;
        let v_ptr = address(&l.v.tensor, l.v.extra)?;
        // SAFETY: both are fully written by the partial kernel before the combine kernel reads.
        let part_acc = unsafe { dev.alloc::<f32>(bh * splits * dv) }?;
        let part_ml = unsafe { dev.alloc::<f32>(bh * splits * 2) }?;
        let acc_ptr = part_acc.device_ptr(&stream).0;
        let ml_ptr = part_ml.device_ptr(&stream).0;

        let partial_name = format!("{}_g{per_block}", l.kernel);
        let partial = function(&dev, "decode_attention", DECODE_ATTENTION, &partial_name)?;
        let smem_floats = 2 * MAXG + (MAXG * split).max(WARPS * MAXG * dv);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, splits as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: (smem_floats * 4) as u32,
        };
        let (ks_head, ks_row, ks_dim) = (
            l.k_sem.head_stride as i64,
            l.k_sem.row_stride as i64,
            sem_dim as i32,
        );
        let (kg_head, kg_row, kg_dim) = (
            l.k_geo.head_stride as i64,
            l.k_geo.row_stride as i64,
            geo_dim as i32,
        );
        let (v_head, v_row, v_dim) = (l.v.head_stride as i64, l.v.row_stride as i64, dv as i32);
        let (n_kv_i, group_i, n_sub_i, len_i, split_i) =
            (nkv as i32, group as i32, n_sub as i32, l.len as i32, split as i32);
        let (s_sem, s_geo) = (l.scales.sem, l.scales.geo);
        let mut builder = stream.launch_builder(&partial);
        builder
            .arg(&q_ptr)
            .arg(&ks_ptr)
            .arg(&ks_head)
            .arg(&ks_row)
            .arg(&ks_dim)
            .arg(&kg_ptr)
            .arg(&kg_head)
            .arg(&kg_row)
            .arg(&kg_dim)
            .arg(&v_ptr)
            .arg(&v_head)
            .arg(&v_row)
            .arg(&v_dim)
            .arg(&n_kv_i)
            .arg(&group_i)
            .arg(&n_sub_i)
            .arg(&len_i)
            .arg(&split_i)
            .arg(&s_sem)
            .arg(&s_geo)
            .arg(&acc_ptr)
            .arg(&ml_ptr);
        // SAFETY: the arguments match the kernel's parameter list in kernels/decode_attention.cu,
        // every pointer addresses a live allocation of the sizes computed above.
        unsafe { builder.launch(cfg) }
            .map_err(|e| candle_core::Error::Cuda(format!("{}: {e}", l.kernel).into()))?;

        let (null_k, null_v) = match &op.null {
            Some((k, v)) => (address(k, 0)?, address(v, 0)?),
            None => (0u64, 0u64),
        };
        let combine_name = match op.out_dtype {
            DType::BF16 => "decode_combine_bf16",
            DType::F16 => "decode_combine_f16",
            _ => "decode_combine_f32",
        };
        let combine = function(&dev, "decode_attention", DECODE_ATTENTION, combine_name)?;
        let splits_i = splits as i32;
        let (sem_i, geo_i) = (sem_dim as i32, geo_dim as i32);
        let cfg = LaunchConfig {
            grid_dim: (bh as u32, 1, 1),
            block_dim: (COMBINE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let run_combine = |out_ptr: u64| -> Result<()> {
            let mut builder = stream.launch_builder(&combine);
            builder
                .arg(&acc_ptr)
                .arg(&ml_ptr)
                .arg(&splits_i)
                .arg(&v_dim)
                .arg(&q_ptr)
                .arg(&sem_i)
                .arg(&geo_i)
                .arg(&s_sem)
                .arg(&s_geo)
                .arg(&null_k)
                .arg(&null_v)
                .arg(&group_i)
                .arg(&n_kv_i)
                .arg(&out_ptr);
            // SAFETY: as above; `out_ptr` holds bh × dv elements of the output type.
            unsafe { builder.launch(cfg) }
                .map(|_| ())
                .map_err(|e| candle_core::Error::Cuda(format!("{combine_name}: {e}").into()))
        };
        let storage = match op.out_dtype {
            DType::BF16 => {
                // SAFETY: every element is written by the combine kernel.
                let out = unsafe { dev.alloc::<half::bf16>(bh * dv) }?;
                run_combine(out.device_ptr(&stream).0)?;
                CudaStorage::wrap_cuda_slice(out, dev.clone())
            }
            DType::F16 => {
                let out = unsafe { dev.alloc::<half::f16>(bh * dv) }?;
                run_combine(out.device_ptr(&stream).0)?;
                CudaStorage::wrap_cuda_slice(out, dev.clone())
            }
            _ => {
                let out = unsafe { dev.alloc::<f32>(bh * dv) }?;
                run_combine(out.device_ptr(&stream).0)?;
                CudaStorage::wrap_cuda_slice(out, dev.clone())
            }
        };
        // The partial buffers are freed stream-ordered after the combine kernel.
        drop((part_acc, part_ml));
        Ok((storage, Shape::from((bh, dv))))
    }
}
