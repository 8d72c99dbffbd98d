//! Quantized matrix × a few vectors (decoding) for GGML Q4_1 and Q8_0 blocks on x86-64 CPUs with
//! AVX-512 VNNI, multi-threaded with [`super::spin_pool`].
//!
//! candle 0.11 has no SIMD dot product for Q4_1 and uses its fast (VNNI, repacked) Q8_0 path only
//! when the inner width is a multiple of 256 (SmolLM2's is 576), and its thread pool spins, which
//! collapses when the cores are shared. Here each activation row is quantized to 8 bits per block
//! of 32 (scale `dx`, and `sx = dx·Σq` for Q4_1's offsets, as llama.cpp's Q8_1) and every weight
//! block is one `vpdpbusd`: Q4_1 `d·q + m` → `d·dx·Σ q·x̂ + m·sx`; Q8_0 `d·q` → `d·dx·Σ|q|·(x̂·sign q)`.
//! The blocks are read where they are (the file's layout). Q4_1 matrices with a multiple of 4 rows
//! are normally repacked instead ([`super::q4_1_packed`], twice as fast); this path takes the rest.
//! [`quantized_matvec`] returns `None` when the CPU, dtype or shape is not covered, and the caller
//! falls back to candle. Shapes: xs (…, k) f32, weight (n, k) → (…, n).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Result, Tensor};

const QK: usize = 32;

/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 32;

/// Matrices with fewer weights than this run on the calling thread.
const SEQUENTIAL_BELOW: usize = 1 << 16;

/// True when this CPU has what the kernels need (checked once).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Activations of one row, quantized per block of 32.
pub(super) struct QuantRow {
    pub(super) q: Vec<i8>,
    /// Per block: scale.
    pub(super) d: Vec<f32>,
    /// Per block: scale · Σ q (for Q4_1's offsets).
    pub(super) s: Vec<f32>,
}

pub(super) fn quantize_row(x: &[f32]) -> QuantRow {
    let nb = x.len() / QK;
    let mut out = QuantRow {
        q: vec![0; x.len()],
        d: vec![0.0; nb],
        s: vec![0.0; nb],
    };
    for b in 0..nb {
        let xs = &x[b * QK..(b + 1) * QK];
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in out.q[b * QK..(b + 1) * QK].iter_mut().zip(xs) {
            let r = (v * inv).round() as i32;
            *q = r.clamp(-127, 127) as i8;
            sum += i32::from(*q);
        }
        out.d[b] = d;
        out.s[b] = d * sum as f32;
    }
    out
}

/// `xs · Wᵀ` with the quantized kernels, or `None` when they do not apply here. With
/// `exact_activations`, Q8_0 weights multiply the f32 activations as they are (no 8-bit rounding
/// of `xs`): the result is the dequantized matmul's to f32 rounding. Output heads use it — an
/// argmax can hinge on a few hundredths of a logit — at about twice the cost per block.
pub fn quantized_matvec(w: &QTensor, xs: &Tensor, exact_activations: bool) -> Result<Option<Tensor>> {
    let dtype = w.dtype();
    if !available() || !xs.device().is_cpu() || xs.dtype() != DType::F32 {
        return Ok(None);
    }
    let exact = exact_activations && dtype == GgmlDType::Q8_0;
    let block_bytes = match dtype {
        GgmlDType::Q4_1 if !exact_activations => 20,
        GgmlDType::Q8_0 => 34,
        _ => return Ok(None),
    };
    let (n, k) = w.shape().dims2()?;
    if k % QK != 0 || xs.dim(candle_core::D::Minus1)? != k {
        return Ok(None);
    }
    let rows = xs.elem_count() / k;
    let x: Vec<f32> = xs.flatten_all()?.to_vec1()?;
    let qrows: Vec<QuantRow> = if exact {
        Vec::new()
    } else {
        x.chunks(k).map(quantize_row).collect()
    };
    let frows: Vec<&[f32]> = x.chunks(k).collect();
    let data = w.data()?;
    let row_bytes = k / QK * block_bytes;
    if data.len() != n * row_bytes {
        return Ok(None);
    }
    // (n, rows) so that each task writes one contiguous slice.
    let mut out_t = vec![0f32; n * rows];
    let work = |(task, chunk): (usize, &mut [f32])| {
        let j0 = task * ROWS_PER_TASK;
        for (jj, outs) in chunk.chunks_mut(rows).enumerate() {
            let wrow = &data[(j0 + jj) * row_bytes..(j0 + jj + 1) * row_bytes];
            if exact {
                for (o, xr) in outs.iter_mut().zip(&frows) {
                    *o = dot_exact(wrow, xr);
                }
            } else {
                for (o, xr) in outs.iter_mut().zip(&qrows) {
                    *o = dot(dtype, wrow, xr);
                }
            }
        }
    };
    // why: handing work to a worker costs more than a small product.
    if n * k < SEQUENTIAL_BELOW {
        out_t.chunks_mut(ROWS_PER_TASK * rows).enumerate().for_each(work);
    } else {
        super::spin_pool::for_each_chunk_mut(&mut out_t, ROWS_PER_TASK * rows, &|i, c| work((i, c)));
    }
    let out = rows_first(out_t, n, rows);
    let mut dims = xs.dims().to_vec();
    *dims.last_mut().expect("xs has a last dim") = n;
    Tensor::from_vec(out, dims, xs.device()).map(Some)
}

/// (n, rows) products, as the parallel tasks write them, in (rows, n) order.
pub(super) fn rows_first(out_t: Vec<f32>, n: usize, rows: usize) -> Vec<f32> {
    if rows == 1 {
        return out_t;
    }
    let mut out = vec![0f32; n * rows];
    for j in 0..n {
        for r in 0..rows {
            out[r * n + j] = out_t[j * rows + r];
        }
    }
    out
}

fn dot(dtype: GgmlDType, wrow: &[u8], x: &QuantRow) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available()` checked every feature these functions enable, and the row and
        // activation lengths match (n_blocks · block bytes, n_blocks · 32).
        unsafe {
            match dtype {
                GgmlDType::Q4_1 => x86::dot_q4_1(wrow, x),
                _ => x86::dot_q8_0(wrow, x),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dtype, wrow, x);
        unreachable!("quantized_matvec returns None before reaching here")
    }
}

fn dot_exact(wrow: &[u8], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as in `dot`; `x` holds n_blocks · 32 values.
        unsafe { x86::dot_q8_0_f32(wrow, x) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (wrow, x);
        unreachable!("quantized_matvec returns None before reaching here")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{QK, QuantRow};

    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn f16(p: *const u8) -> f32 {
        // SAFETY: the caller points at two readable bytes (a GGML f16 scale).
        unsafe {
            let bits = std::ptr::read_unaligned(p as *const u16);
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Q4_1 block: d (f16), m (f16), 16 bytes: element j in the low nibble of byte j, element
    /// j + 16 in its high nibble. Two blocks per step: one 512-bit `vpdpbusd`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512dq,avx512vnni")]
    pub unsafe fn dot_q4_1(w: &[u8], x: &QuantRow) -> f32 {
        let nb = x.d.len();
        debug_assert_eq!(w.len(), nb * 20);
        let (wp, xq, xd, xs) = (w.as_ptr(), x.q.as_ptr(), x.d.as_ptr(), x.s.as_ptr());
        let mask = _mm256_set1_epi8(0x0f);
        let mut acc = _mm512_setzero_ps();
        let mut mins = 0f32;
        let mut b = 0;
        // SAFETY (all blocks below): b + 1 < nb (or b < nb in the tail), so every block read lies
        // inside `w` (20 bytes each), `x.q` (32 each) and `x.d`/`x.s` (one each).
        while b + 1 < nb {
            unsafe {
                let p0 = wp.add(b * 20);
                let p1 = p0.add(20);
                let dm0 = dm(p0);
                let dm1 = dm(p1);
                let t = _mm256_set_m128i(
                    _mm_loadu_si128(p1.add(4) as *const __m128i),
                    _mm_loadu_si128(p0.add(4) as *const __m128i),
                );
                let lo = _mm256_and_si256(t, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), mask);
                let q = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)),
                    _mm256_permute2x128_si256(lo, hi, 0x31),
                    1,
                );
                let xv = _mm512_loadu_si512(xq.add(b * QK) as *const _);
                let dotv = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, xv);
                let scale = _mm512_insertf32x8(
                    _mm512_set1_ps(dm0.0 * *xd.add(b)),
                    _mm256_set1_ps(dm1.0 * *xd.add(b + 1)),
                    1,
                );
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dotv), scale, acc);
                mins += dm0.1 * *xs.add(b) + dm1.1 * *xs.add(b + 1);
            }
            b += 2;
        }
        let mut total = _mm512_reduce_add_ps(acc);
        if b < nb {
            unsafe {
                let p = wp.add(b * 20);
                let (d, m) = dm(p);
                let v = _mm_loadu_si128(p.add(4) as *const __m128i);
                let m4 = _mm_set1_epi8(0x0f);
                let q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
                let xv = _mm256_loadu_si256(xq.add(b * QK) as *const __m256i);
                let dotv = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, xv);
                total += d * *xd.add(b) * hsum(_mm256_cvtepi32_ps(dotv)) + m * *xs.add(b);
            }
        }
        total + mins
    }

    /// Q8_0 block: d (f16), 32 signed bytes. Two blocks per step.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512dq,avx512bw,avx512vnni")]
    pub unsafe fn dot_q8_0(w: &[u8], x: &QuantRow) -> f32 {
        let nb = x.d.len();
        debug_assert_eq!(w.len(), nb * 34);
        let (wp, xq, xd) = (w.as_ptr(), x.q.as_ptr(), x.d.as_ptr());
        let mut acc = _mm512_setzero_ps();
        let mut b = 0;
        // SAFETY (all blocks below): as in `dot_q4_1`, with 34-byte blocks.
        while b + 1 < nb {
            unsafe {
                let p0 = wp.add(b * 34);
                let p1 = p0.add(34);
                let wv = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256(p0.add(2) as *const __m256i)),
                    _mm256_loadu_si256(p1.add(2) as *const __m256i),
                    1,
                );
                let xv = _mm512_loadu_si512(xq.add(b * QK) as *const _);
                // |w| (unsigned) · (x · sign w) = w · x, the form vpdpbusd takes.
                let neg = _mm512_movepi8_mask(wv);
                let xs = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
                let dotv = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(wv), xs);
                let scale = _mm512_insertf32x8(
                    _mm512_set1_ps(f16(p0) * *xd.add(b)),
                    _mm256_set1_ps(f16(p1) * *xd.add(b + 1)),
                    1,
                );
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dotv), scale, acc);
            }
            b += 2;
        }
        let mut total = _mm512_reduce_add_ps(acc);
        if b < nb {
            unsafe {
                let p = wp.add(b * 34);
                let wv = _mm256_loadu_si256(p.add(2) as *const __m256i);
                let xv = _mm256_loadu_si256(xq.add(b * QK) as *const __m256i);
                let dotv = _mm256_dpbusd_epi32(
                    _mm256_setzero_si256(),
                    _mm256_abs_epi8(wv),
                    _mm256_sign_epi8(xv, wv),
                );
                total += f16(p) * *xd.add(b) * hsum(_mm256_cvtepi32_ps(dotv));
            }
        }
        total
    }

    /// Q8_0 weights · f32 activations, 16 lanes at a time.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub unsafe fn dot_q8_0_f32(w: &[u8], x: &[f32]) -> f32 {
        let nb = x.len() / QK;
        debug_assert_eq!(w.len(), nb * 34);
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc = _mm512_setzero_ps();
        for b in 0..nb {
            // SAFETY: block b lies inside `w` (34 bytes each) and `x` (32 values each).
            unsafe {
                let p = wp.add(b * 34);
                let w0 =
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(2) as *const __m128i)));
                let w1 =
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(18) as *const __m128i)));
                let s = _mm512_mul_ps(w0, _mm512_loadu_ps(xp.add(b * QK)));
                let s = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xp.add(b * QK + 16)), s);
                acc = _mm512_fmadd_ps(s, _mm512_set1_ps(f16(p)), acc);
            }
        }
        _mm512_reduce_add_ps(acc)
    }

    /// The (d, m) f16 pair at the start of a Q4_1 block, as f32.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn dm(p: *const u8) -> (f32, f32) {
        // SAFETY: the caller points at a Q4_1 block (at least 4 readable bytes).
        let bits = unsafe { std::ptr::read_unaligned(p as *const i32) };
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        d / b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn kernels_match_dequantized_matmul() -> Result<()> {
        if !available() {
            eprintln!("skipping: this CPU lacks AVX-512 VNNI");
            return Ok(());
        }
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            for (rows, k) in [(1usize, 576), (3, 576), (2, 544)] {
                let w = Tensor::randn(0f32, 1.0, (200, k), &Device::Cpu)?;
                let q = QTensor::quantize(&w, dtype)?;
                let xs = Tensor::randn(0f32, 1.0, (1, rows, k), &Device::Cpu)?;
                let want = xs.broadcast_matmul(&q.dequantize(&Device::Cpu)?.t()?)?;
                let got = quantized_matvec(&q, &xs, false)?.expect("the kernel applies");
                assert_eq!(got.dims(), want.dims());
                // why: the activations are quantized to 8 bits per block of 32.
                let err = rel_err(&got, &want);
                if (k / 32) % 2 == 0 {
                    // candle's own Q4_1/Q8_0 kernels quantize the activations the same way.
                    let candle =
                        candle_core::quantized::QMatMul::from_qtensor(QTensor::quantize(&w, dtype)?)?;
                    let theirs = candle_core::Module::forward(&candle, &xs)?;
                    let diff = rel_err(&got, &theirs);
                    assert!(diff < 2e-3, "{dtype:?} rows={rows}: {diff} from candle's kernel");
                }
                assert!(err < 2e-2, "{dtype:?} rows={rows}: relative error {err}");
            }
        }
        Ok(())
    }

    #[test]
    fn exact_activations_match_the_dequantized_matmul_to_f32_rounding() -> Result<()> {
        if !available() {
            eprintln!("skipping: this CPU lacks AVX-512 VNNI");
            return Ok(());
        }
        let w = Tensor::randn(0f32, 1.0, (300, 576), &Device::Cpu)?;
        let q = QTensor::quantize(&w, GgmlDType::Q8_0)?;
        // Outliers in a few channels, as in real hidden states.
        let scale: Vec<f32> = (0..576).map(|i| if i % 97 == 5 { 40.0 } else { 1.0 }).collect();
        let xs = Tensor::randn(0f32, 1.0, (1, 2, 576), &Device::Cpu)?
            .broadcast_mul(&Tensor::new(scale, &Device::Cpu)?)?;
        let want = xs.broadcast_matmul(&q.dequantize(&Device::Cpu)?.t()?)?;
        let got = quantized_matvec(&q, &xs, true)?.expect("the kernel applies");
        let err = rel_err(&got, &want);
        assert!(err < 1e-5, "relative error {err}");
        // Q4_1 has no exact kernel: the caller falls back.
        let q41 = QTensor::quantize(&w, GgmlDType::Q4_1)?;
        assert!(quantized_matvec(&q41, &xs, true)?.is_none());
        Ok(())
    }
}
