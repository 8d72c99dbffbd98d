//! The rows of one stream segment for one (batch, KV head): a growable array of head vectors, each
//! stored in a [`CacheKind`].
//!
//! Layout (structure of arrays, row-major over tokens): float kinds keep `width` values per row;
//! quantized kinds keep `n_blocks(width)` f16 scales per row in `scales` and the codes of the row's
//! blocks back to back in `codes` (q8_0: one i8 per value; q4_0/nf4: ⌈n/2⌉ nibble bytes per block).
//! Per block this is llama.cpp's `block_q8_0` / `block_q4_0` content, with the scales kept apart so
//! that code rows stay contiguous. Growth is `Vec`'s amortized doubling: never an O(n²) copy chain.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::kind::{BLOCK, CacheKind, block_len, blocks, n_blocks};
use super::quant::{self, nibble_bytes};
use super::simd::{Lanes, Portable};

#[derive(Debug, Clone)]
enum Data {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    Quant { scales: Vec<f16>, codes: Vec<u8> },
}

/// Decode whole blocks: `$decode(codes[i], scale[i], out[i])`, the scales widened 8 at a time.
/// (A macro, not a function taking the decoder: a passed function item loses `inline(always)`
/// and with it the kernel's instruction set.)
macro_rules! for_blocks {
    ($lanes:ty, $scales:expr, $out:expr, $codes:expr, $decode:ident) => {{
        let mut wide = [0.0f32; 8];
        for ((sc, o), qs) in $scales.chunks(8).zip($out.chunks_mut(8)).zip($codes.chunks(8)) {
            <$lanes>::f16_to_f32(sc, &mut wide[..sc.len()]);
            for ((o, qs), &d) in o.iter_mut().zip(qs).zip(&wide) {
                <$lanes>::$decode(qs, d, o);
            }
        }
    }};
}

/// Growable rows of `width` values in one [`CacheKind`].
#[derive(Debug, Clone)]
pub struct Rows {
    kind: CacheKind,
    width: usize,
    len: usize,
    /// Code bytes of one row (quantized kinds).
    code_bytes: usize,
    /// `block_len(width)` and `n_blocks(width)`, kept to spare the kernel two divisions a row.
    block_len: usize,
    n_blocks: usize,
    data: Data,
}

impl Rows {
    /// Empty rows of `width` values stored as `kind`.
    pub fn new(kind: CacheKind, width: usize) -> Self {
        let data = match kind {
            CacheKind::Fp32 => Data::F32(Vec::new()),
            CacheKind::Fp16 => Data::F16(Vec::new()),
            CacheKind::Bf16 => Data::Bf16(Vec::new()),
            CacheKind::Q8_0 | CacheKind::Q4_0 | CacheKind::Nf4 => Data::Quant {
                scales: Vec::new(),
                codes: Vec::new(),
            },
        };
        let code_bytes = match kind {
            CacheKind::Q8_0 => width,
            CacheKind::Q4_0 | CacheKind::Nf4 => blocks(width).map(|(_, n)| nibble_bytes(n)).sum(),
            _ => 0,
        };
        Self {
            kind,
            width,
            len: 0,
            code_bytes,
            block_len: block_len(width),
            n_blocks: n_blocks(width),
            data,
        }
    }

    pub fn kind(&self) -> CacheKind {
        self.kind
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of stored rows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Make room for `additional` more rows without reallocating.
    pub fn reserve(&mut self, additional: usize) {
        let (w, nb, cb) = (self.width, n_blocks(self.width), self.code_bytes);
        match &mut self.data {
            Data::F32(v) => v.reserve(additional * w),
            Data::F16(v) => v.reserve(additional * w),
            Data::Bf16(v) => v.reserve(additional * w),
            Data::Quant { scales, codes } => {
                scales.reserve(additional * nb);
                codes.reserve(additional * cb);
            }
        }
    }

    /// Append one row `x` (`width` values), encoded in this kind.
    pub fn push(&mut self, x: &[f32]) {
        debug_assert_eq!(x.len(), self.width);
        let (nb, cb) = (n_blocks(self.width), self.code_bytes);
        match &mut self.data {
            Data::F32(v) => v.extend_from_slice(x),
            Data::F16(v) => v.extend(x.iter().map(|&a| f16::from_f32(a))),
            Data::Bf16(v) => v.extend(x.iter().map(|&a| bf16::from_f32(a))),
            Data::Quant { scales, codes } => {
                scales.resize(scales.len() + nb, f16::ZERO);
                codes.resize(codes.len() + cb, 0);
            }
        }
        self.len += 1;
        if self.kind.is_quantized() {
            self.encode_quant(self.len - 1, x);
        }
    }

    /// Overwrite row `i` (< len) with `x`.
    pub fn set(&mut self, i: usize, x: &[f32]) {
        debug_assert!(i < self.len && x.len() == self.width);
        let w = self.width;
        match &mut self.data {
            Data::F32(v) => v[i * w..(i + 1) * w].copy_from_slice(x),
            Data::F16(v) => v[i * w..(i + 1) * w].convert_from_f32_slice(x),
            Data::Bf16(v) => v[i * w..(i + 1) * w].convert_from_f32_slice(x),
            Data::Quant { .. } => self.encode_quant(i, x),
        }
    }

    fn encode_quant(&mut self, i: usize, x: &[f32]) {
        let (nb, cb, kind, width) = (n_blocks(self.width), self.code_bytes, self.kind, self.width);
        let Data::Quant { scales, codes } = &mut self.data else {
            return;
        };
        let scales = &mut scales[i * nb..(i + 1) * nb];
        let mut codes = &mut codes[i * cb..(i + 1) * cb];
        for (b, (start, n)) in blocks(width).enumerate() {
            let xb = &x[start..start + n];
            let used = if kind == CacheKind::Q8_0 {
                n
            } else {
                nibble_bytes(n)
            };
            let (qs, rest) = codes.split_at_mut(used);
            scales[b] = match kind {
                CacheKind::Q8_0 => {
                    let mut q = [0i8; 32];
                    let d = quant::quantize_q8_0(xb, &mut q[..n]);
                    qs.iter_mut().zip(&q[..n]).for_each(|(o, &v)| *o = v as u8);
                    d
                }
                CacheKind::Q4_0 => quant::quantize_q4_0(xb, qs),
                _ => quant::quantize_nf4(xb, qs),
            };
            codes = rest;
        }
    }

    /// Keep the first `n` rows (no-op when `n ≥ len`).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len);
        let (w, nb, cb) = (self.width, n_blocks(self.width), self.code_bytes);
        match &mut self.data {
            Data::F32(v) => v.truncate(n * w),
            Data::F16(v) => v.truncate(n * w),
            Data::Bf16(v) => v.truncate(n * w),
            Data::Quant { scales, codes } => {
                scales.truncate(n * nb);
                codes.truncate(n * cb);
            }
        }
        self.len = n;
    }

    /// Drop every row and free the memory.
    pub fn clear(&mut self) {
        *self = Rows::new(self.kind, self.width);
    }

    /// Bytes of the live rows (exactly `len · kind.row_bytes(width)`).
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::F32(v) => 4 * v.len(),
            Data::F16(v) => 2 * v.len(),
            Data::Bf16(v) => 2 * v.len(),
            Data::Quant { scales, codes } => 2 * scales.len() + codes.len(),
        }
    }

    /// Bytes allocated (live rows plus growth slack).
    pub fn capacity_bytes(&self) -> usize {
        match &self.data {
            Data::F32(v) => 4 * v.capacity(),
            Data::F16(v) => 2 * v.capacity(),
            Data::Bf16(v) => 2 * v.capacity(),
            Data::Quant { scales, codes } => 2 * scales.capacity() + codes.capacity(),
        }
    }

    /// Dequantize row `i` into `out` (`width` values).
    pub fn decode(&self, i: usize, out: &mut [f32]) {
        self.decode_with::<Portable>(i, out);
    }

    /// Rows `range` as one f32 slice (`range.len() × width`), for `fp32` storage only.
    #[inline(always)]
    pub(crate) fn f32_rows(&self, range: std::ops::Range<usize>) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(&v[range.start * self.width..range.end * self.width]),
            _ => None,
        }
    }

    /// Rows `range` decoded into `out` (`range.len() × width`). Rows are contiguous, so float
    /// kinds convert in one pass and quantized kinds with whole blocks (width a multiple of 32)
    /// decode block after block with no per-row bookkeeping.
    #[inline(always)]
    pub(crate) fn decode_range<L: Lanes>(&self, range: std::ops::Range<usize>, out: &mut [f32]) {
        let w = self.width;
        let out = &mut out[..range.len() * w];
        let flat = range.start * w..range.end * w;
        match &self.data {
            Data::F32(v) => out.copy_from_slice(&v[flat]),
            Data::F16(v) => L::f16_to_f32(&v[flat], out),
            Data::Bf16(v) => L::bf16_to_f32(&v[flat], out),
            Data::Quant { scales, codes } if w.is_multiple_of(BLOCK) => {
                let (nb, cb) = (self.n_blocks, self.code_bytes);
                let scales = &scales[range.start * nb..range.end * nb];
                let codes = &codes[range.start * cb..range.end * cb];
                let (blocks, _) = out.as_chunks_mut::<BLOCK>();
                // why: whole arrays let the block decoders drop their length checks, and the scales
                // are widened 8 at a time.
                match self.kind {
                    CacheKind::Q8_0 => {
                        let (qs, _) = codes.as_chunks::<BLOCK>();
                        for_blocks!(L, scales, blocks, qs, q8_0_block);
                    }
                    CacheKind::Q4_0 => {
                        let (qs, _) = codes.as_chunks::<{ BLOCK / 2 }>();
                        for_blocks!(L, scales, blocks, qs, q4_0_block);
                    }
                    _ => {
                        let (qs, _) = codes.as_chunks::<{ BLOCK / 2 }>();
                        for_blocks!(L, scales, blocks, qs, nf4_block);
                    }
                }
            }
            Data::Quant { .. } => {
                for (j, p) in range.enumerate() {
                    self.decode_with::<L>(p, &mut out[j * w..(j + 1) * w]);
                }
            }
        }
    }

    /// [`Rows::decode`] with the kernel's vector primitives (inlined into the attention kernel,
    /// so it is compiled once per instruction set the kernel is built for).
    #[inline(always)]
    pub(crate) fn decode_with<L: Lanes>(&self, i: usize, out: &mut [f32]) {
        let w = self.width;
        match &self.data {
            Data::F32(v) => out.copy_from_slice(&v[i * w..(i + 1) * w]),
            Data::F16(v) => L::f16_to_f32(&v[i * w..(i + 1) * w], out),
            Data::Bf16(v) => L::bf16_to_f32(&v[i * w..(i + 1) * w], out),
            Data::Quant { scales, codes } => {
                let nb = self.n_blocks;
                let scales = &scales[i * nb..(i + 1) * nb];
                let mut codes = &codes[i * self.code_bytes..(i + 1) * self.code_bytes];
                for (o, d) in out[..w].chunks_mut(self.block_len).zip(scales) {
                    let n = o.len();
                    let d = L::scale(*d);
                    codes = match self.kind {
                        CacheKind::Q8_0 => {
                            let (qs, rest) = codes.split_at(n);
                            L::q8_0_block(qs, d, o);
                            rest
                        }
                        CacheKind::Q4_0 => {
                            let (qs, rest) = codes.split_at(nibble_bytes(n));
                            L::q4_0_block(qs, d, o);
                            rest
                        }
                        _ => {
                            let (qs, rest) = codes.split_at(nibble_bytes(n));
                            L::nf4_block(qs, d, o);
                            rest
                        }
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;

    #[test]
    fn push_decode_truncate_and_bytes_for_every_kind_and_odd_widths() {
        let seed: u64 = rand::rng().random();
        eprintln!("seed {seed}");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for kind in CacheKind::ALL {
            for width in [24usize, 40, 64, 33, 7] {
                let mut rows = Rows::new(kind, width);
                let xs: Vec<Vec<f32>> = (0..37)
                    .map(|_| (0..width).map(|_| StandardNormal.sample(&mut rng)).collect())
                    .collect();
                xs.iter().for_each(|x| rows.push(x));
                assert_eq!(rows.len(), 37);
                assert_eq!(rows.bytes(), 37 * kind.row_bytes(width), "{kind} {width}");
                let tol = match kind {
                    CacheKind::Fp32 => 0.0,
                    CacheKind::Fp16 => 2e-3,
                    CacheKind::Bf16 => 2e-2,
                    CacheKind::Q8_0 => 0.03,
                    CacheKind::Q4_0 => 0.6,
                    CacheKind::Nf4 => 0.6,
                };
                let mut out = vec![f32::NAN; width];
                for (i, x) in xs.iter().enumerate() {
                    out.fill(f32::NAN);
                    rows.decode(i, &mut out);
                    let amax = x.iter().map(|v| v.abs()).fold(0.0, f32::max);
                    for (a, b) in out.iter().zip(x) {
                        assert!(
                            (a - b).abs() <= tol * amax,
                            "{kind} w={width} row {i}: {a} vs {b}"
                        );
                    }
                }
                // Overwrite, truncate, append again: row 5 reads back what was pushed last.
                rows.set(3, &xs[0]);
                let mut again = vec![0.0; width];
                rows.decode(3, &mut again);
                rows.decode(0, &mut out);
                assert_eq!(again, out);
                rows.truncate(5);
                assert_eq!(rows.len(), 5);
                assert_eq!(rows.bytes(), 5 * kind.row_bytes(width));
                rows.push(&xs[20]);
                rows.decode(5, &mut again);
                let mut fresh = Rows::new(kind, width);
                fresh.push(&xs[20]);
                fresh.decode(0, &mut out);
                assert_eq!(again, out);
                rows.clear();
                assert_eq!((rows.len(), rows.bytes()), (0, 0));
            }
        }
    }
}
