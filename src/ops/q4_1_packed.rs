//! GGML Q4_1 weights repacked four rows at a time, for decoding on x86-64 CPUs with AVX-512 VNNI.
//!
//! A Q4_1 block holds 32 weights `d·q + m` (f16 `d`, f16 `m`, 16 bytes of nibbles). Multiplying a
//! GGUF file's row-by-row blocks, the core spends most of its instructions on the two scalar
//! scales of every block (measured: ~28 instructions per 64 weights, compute-bound at ~8 GB/s on
//! one core). Here the blocks of rows `4g … 4g+3` at block index `b` sit together:
//!
//! ```text
//! d[0..4] (4 × f16) | m[0..4] (4 × f16) | nibbles of row 4g (16 B) | … | nibbles of row 4g+3
//! ```
//!
//! 80 bytes, as many as the four blocks it replaces, so memory does not grow. One 512-bit load
//! takes the four rows' nibbles, two `vpdpbusd` multiply them by the activation block broadcast
//! to all four lanes, and the four scales are converted and spread in one go: ~14 instructions per
//! 128 weights. Products over many rows (prefill) dequantize chunks of rows for a dense GEMM, as
//! the unpacked path does.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};

const QK: usize = 32;
/// Bytes of one group block (four rows × one block of 32).
const GROUP_BLOCK: usize = 80;
/// Bytes of one Q4_1 block in a GGUF file.
const FILE_BLOCK: usize = 20;
/// Groups of four rows per parallel task.
const GROUPS_PER_TASK: usize = 8;
/// Matrices with fewer weights than this run on the calling thread.
const SEQUENTIAL_BELOW: usize = 1 << 16;

/// A (n, k) Q4_1 matrix in the four-row layout above.
#[derive(Debug)]
pub struct PackedQ4_1 {
    n: usize,
    k: usize,
    data: Vec<u8>,
}

impl PackedQ4_1 {
    /// Repack `q`, or `None` when it is not a Q4_1 (n, k) matrix with n a multiple of 4 and k of
    /// 32, on the CPU, or this CPU lacks the kernel's instructions.
    pub fn pack(q: &QTensor) -> Result<Option<Self>> {
        if q.dtype() != GgmlDType::Q4_1 || !q.device().is_cpu() || !super::qmatvec::available() {
            return Ok(None);
        }
        let Ok((n, k)) = q.shape().dims2() else {
            return Ok(None);
        };
        if n % 4 != 0 || k % QK != 0 {
            return Ok(None);
        }
        let src = q.data()?;
        Ok(Some(Self::from_file_blocks(&src, n, k)))
    }

    fn from_file_blocks(src: &[u8], n: usize, k: usize) -> Self {
        let nb = k / QK;
        let row = nb * FILE_BLOCK;
        let mut data = vec![0u8; n * row];
        for g in 0..n / 4 {
            for b in 0..nb {
                let out = &mut data[(g * nb + b) * GROUP_BLOCK..(g * nb + b + 1) * GROUP_BLOCK];
                for r in 0..4 {
                    let blk = &src[(4 * g + r) * row + b * FILE_BLOCK..][..FILE_BLOCK];
                    out[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
                    out[8 + 2 * r..8 + 2 * r + 2].copy_from_slice(&blk[2..4]);
                    out[16 + 16 * r..16 + 16 * (r + 1)].copy_from_slice(&blk[4..20]);
                }
            }
        }
        Self { n, k, data }
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Bytes held (equal to the GGUF blocks').
    pub fn size_in_bytes(&self) -> usize {
        self.data.len()
    }

    /// Rows `start .. start + len` (multiples of 4) dequantized: (len, k) f32, row-major.
    pub fn dequantize_rows(&self, start: usize, len: usize) -> Vec<f32> {
        let (k, nb) = (self.k, self.k / QK);
        let mut out = vec![0f32; len * k];
        for g in start / 4..(start + len) / 4 {
            for b in 0..nb {
                let blk = &self.data[(g * nb + b) * GROUP_BLOCK..][..GROUP_BLOCK];
                for r in 0..4 {
                    let d = half::f16::from_le_bytes([blk[2 * r], blk[2 * r + 1]]).to_f32();
                    let m = half::f16::from_le_bytes([blk[8 + 2 * r], blk[9 + 2 * r]]).to_f32();
                    let nib = &blk[16 + 16 * r..16 + 16 * (r + 1)];
                    let o = &mut out[(4 * g + r - start) * k + b * QK..][..QK];
                    for (j, &byte) in nib.iter().enumerate() {
                        o[j] = d * f32::from(byte & 0x0f) + m;
                        o[j + 16] = d * f32::from(byte >> 4) + m;
                    }
                }
            }
        }
        out
    }

    /// The whole matrix dequantized, (n, k) f32.
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(self.dequantize_rows(0, self.n), (self.n, self.k), device)
    }

    /// `xs (…, k) · Wᵀ` for f32 `xs` with few rows (decoding): activations quantized to 8 bits per
    /// block of 32, as llama.cpp's Q8_1.
    pub fn matvec(&self, xs: &Tensor) -> Result<Tensor> {
        let (n, k) = (self.n, self.k);
        let xs = xs.contiguous()?;
        if xs.dim(candle_core::D::Minus1)? != k {
            candle_core::bail!(
                "packed Q4_1 matvec: input width {} is not {k}",
                xs.dims().last().unwrap_or(&0)
            );
        }
        let rows = xs.elem_count() / k;
        let x: Vec<f32> = xs.flatten_all()?.to_vec1()?;
        let qrows: Vec<super::qmatvec::QuantRow> = x.chunks(k).map(super::qmatvec::quantize_row).collect();
        let nb = k / QK;
        let group_bytes = nb * GROUP_BLOCK;
        // (n, rows) so that each task writes one contiguous slice.
        let mut out_t = vec![0f32; n * rows];
        let work = |task: usize, chunk: &mut [f32]| {
            let g0 = task * GROUPS_PER_TASK;
            for (gg, outs) in chunk.chunks_mut(4 * rows).enumerate() {
                let w = &self.data[(g0 + gg) * group_bytes..(g0 + gg + 1) * group_bytes];
                for (r, xr) in qrows.iter().enumerate() {
                    let four = dot4(w, xr);
                    for (i, v) in four.iter().enumerate() {
                        outs[i * rows + r] = *v;
                    }
                }
            }
        };
        let chunk = GROUPS_PER_TASK * 4 * rows;
        if n * k < SEQUENTIAL_BELOW {
            out_t.chunks_mut(chunk).enumerate().for_each(|(i, c)| work(i, c));
        } else {
            super::spin_pool::for_each_chunk_mut(&mut out_t, chunk, &work);
        }
        let out = super::qmatvec::rows_first(out_t, n, rows);
        let mut dims = xs.dims().to_vec();
        *dims.last_mut().expect("xs has a last dim") = n;
        Tensor::from_vec(out, dims, xs.device())
    }
}

fn dot4(w: &[u8], x: &super::qmatvec::QuantRow) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `pack` only builds a matrix when `qmatvec::available()` (every feature the
        // kernel enables), and `w` holds one group of nb blocks for x's nb blocks.
        unsafe { x86::dot4(w, x) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, x);
        unreachable!("PackedQ4_1::pack returns None off x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::qmatvec::QuantRow;
    use super::{GROUP_BLOCK, QK};

    /// Groups ahead that are prefetched.
    const PREFETCH_GROUPS: usize = 2;

    /// The four rows of one group · one quantized activation row.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512dq,avx512bw,avx512vnni")]
    pub unsafe fn dot4(w: &[u8], x: &QuantRow) -> [f32; 4] {
        let nb = x.d.len();
        debug_assert_eq!(w.len(), nb * GROUP_BLOCK);
        let (wp, xq, xd, xs) = (w.as_ptr(), x.q.as_ptr(), x.d.as_ptr(), x.s.as_ptr());
        let mask = _mm512_set1_epi8(0x0f);
        // Lane l of a 512-bit vector belongs to row l / 4.
        let spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        let mut acc = _mm512_setzero_ps();
        let mut mins = _mm_setzero_ps();
        let group_bytes = nb * GROUP_BLOCK;
        for b in 0..nb {
            // SAFETY: block b of the group lies inside `w` (80 bytes each), activation block b
            // inside `x.q` (32 bytes) and `x.d`/`x.s`; the prefetch address is only a hint.
            unsafe {
                let p = wp.add(b * GROUP_BLOCK);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_GROUPS * group_bytes) as *const i8);
                let nib = _mm512_loadu_si512(p.add(16) as *const _);
                let lo = _mm512_and_si512(nib, mask);
                let hi = _mm512_and_si512(_mm512_srli_epi16(nib, 4), mask);
                let xlo = _mm512_broadcast_i32x4(_mm_loadu_si128(xq.add(b * QK) as *const __m128i));
                let xhi = _mm512_broadcast_i32x4(_mm_loadu_si128(xq.add(b * QK + 16) as *const __m128i));
                let isum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xlo), hi, xhi);
                let d4 = _mm_cvtph_ps(_mm_loadl_epi64(p as *const __m128i));
                let m4 = _mm_cvtph_ps(_mm_loadl_epi64(p.add(8) as *const __m128i));
                let d16 = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(d4));
                let scale = _mm512_mul_ps(d16, _mm512_set1_ps(*xd.add(b)));
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc);
                mins = _mm_fmadd_ps(m4, _mm_set1_ps(*xs.add(b)), mins);
            }
        }
        // Sum each row's four lanes: (0+1, 2+3) pairs, then the pairs.
        let mut lanes = [0f32; 16];
        // SAFETY: 16 floats fit `lanes`.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
        let mut m = [0f32; 4];
        // SAFETY: 4 floats fit `m`.
        unsafe { _mm_storeu_ps(m.as_mut_ptr(), mins) };
        std::array::from_fn(|r| lanes[4 * r..4 * r + 4].iter().sum::<f32>() + m[r])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_matches_the_file_blocks() -> Result<()> {
        if !super::super::qmatvec::available() {
            eprintln!("skipping: this CPU lacks AVX-512 VNNI");
            return Ok(());
        }
        let dev = Device::Cpu;
        for (n, k, rows) in [(8usize, 64usize, 1usize), (200, 576, 1), (44, 544, 3)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let q = QTensor::quantize(&w, GgmlDType::Q4_1)?;
            let p = PackedQ4_1::pack(&q)?.expect("packs");
            assert_eq!(p.size_in_bytes(), q.storage_size_in_bytes());
            // Dequantizing the repacked blocks gives candle's dequantization exactly.
            let want_w = q.dequantize(&dev)?;
            let diff = (p.dequantize(&dev)? - &want_w)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "dequantized ({n}, {k})");
            // The product matches the unpacked kernel (same activation rounding) closely and the
            // dense product to 8-bit activation precision.
            let xs = Tensor::randn(0f32, 1.0, (1, rows, k), &dev)?;
            let got = p.matvec(&xs)?;
            let unpacked = super::super::qmatvec::quantized_matvec(&q, &xs, false)?.expect("applies");
            let dense = xs.broadcast_matmul(&want_w.t()?)?;
            let scale = dense.abs()?.max_all()?.to_scalar::<f32>()?;
            let e1 = (&got - &unpacked)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
            let e2 = (&got - &dense)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
            assert!(e1 < 1e-5, "({n}, {k}) rows={rows}: {e1} from the unpacked kernel");
            assert!(e2 < 2e-2, "({n}, {k}) rows={rows}: {e2} from the dense product");
        }
        Ok(())
    }

    #[test]
    fn odd_shapes_are_not_packed() -> Result<()> {
        let w = Tensor::randn(0f32, 1.0, (6, 64), &Device::Cpu)?;
        let q = QTensor::quantize(&w, GgmlDType::Q4_1)?;
        assert!(PackedQ4_1::pack(&q)?.is_none());
        let q8 = QTensor::quantize(&Tensor::randn(0f32, 1.0, (8, 64), &Device::Cpu)?, GgmlDType::Q8_0)?;
        assert!(PackedQ4_1::pack(&q8)?.is_none());
        Ok(())
    }
}
