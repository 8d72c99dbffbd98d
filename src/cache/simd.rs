//! The primitives of the decode kernel — dot product, `y += a·x`, and decoding a stored row or
//! block to f32 — in a portable form and an AVX2 + FMA + F16C form. The kernel is generic over
//! [`Lanes`]; the AVX2 form is only ever instantiated inside a
//! `#[target_feature(enable = "avx2,fma,f16c")]` function that runs after a CPU check, so its
//! intrinsics are inlined there. Both forms decode to equal values (up to the sign of zero).

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::quant;

/// Vector primitives the kernel is generic over.
pub(crate) trait Lanes {
    /// `a · b` over `min(a.len(), b.len())` values.
    fn dot(a: &[f32], b: &[f32]) -> f32;
    /// `y += a · x` over `min(x.len(), y.len())` values.
    fn axpy(a: f32, x: &[f32], y: &mut [f32]);
    /// `out[r·stride + j] = q_r · key_j` for the rows of `q` and `keys` (both of width `d`).
    fn scores(q: &[f32], d: usize, keys: &[f32], out: &mut [f32], stride: usize) {
        for (j, k) in keys.chunks_exact(d).enumerate() {
            for (r, qr) in q.chunks_exact(d).enumerate() {
                out[r * stride + j] = Self::dot(qr, k);
            }
        }
    }
    /// `acc_r += Σ_j p[r·stride + j] · val_j` for the rows of `acc` and `vals` (both of width `d`).
    fn accumulate(p: &[f32], stride: usize, vals: &[f32], d: usize, acc: &mut [f32]) {
        for (j, v) in vals.chunks_exact(d).enumerate() {
            for (r, ar) in acc.chunks_exact_mut(d).enumerate() {
                Self::axpy(p[r * stride + j], v, ar);
            }
        }
    }
    /// One f16 scale as f32.
    fn scale(d: f16) -> f32 {
        d.to_f32()
    }
    /// `out[i] = src[i]` widened from f16.
    fn f16_to_f32(src: &[f16], out: &mut [f32]);
    /// `out[i] = src[i]` widened from bf16.
    fn bf16_to_f32(src: &[bf16], out: &mut [f32]);
    /// One q8_0 block of `out.len()` values: `qs[i] as i8 · d`.
    fn q8_0_block(qs: &[u8], d: f32, out: &mut [f32]);
    /// One q4_0 block of `out.len()` values: `(nibble − 8) · d` (packing in [`super::quant`]).
    fn q4_0_block(qs: &[u8], d: f32, out: &mut [f32]);
    /// One NF4 block of `out.len()` values: `level[nibble] · d`.
    fn nf4_block(qs: &[u8], d: f32, out: &mut [f32]);
}

/// Plain Rust (auto-vectorized where the compiler manages; the reference and the fallback).
pub(crate) struct Portable;

impl Lanes for Portable {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in ca.zip(cb) {
            for l in 0..8 {
                acc[l] += x[l] * y[l];
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    #[inline(always)]
    fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
    }

    #[inline(always)]
    fn f16_to_f32(src: &[f16], out: &mut [f32]) {
        src.convert_to_f32_slice(out);
    }

    #[inline(always)]
    fn bf16_to_f32(src: &[bf16], out: &mut [f32]) {
        out.iter_mut()
            .zip(src)
            .for_each(|(o, b)| *o = f32::from_bits((b.to_bits() as u32) << 16));
    }

    #[inline(always)]
    fn q8_0_block(qs: &[u8], d: f32, out: &mut [f32]) {
        quant::q8_0_codes(qs, out);
        out.iter_mut().for_each(|v| *v *= d);
    }

    #[inline(always)]
    fn q4_0_block(qs: &[u8], d: f32, out: &mut [f32]) {
        quant::q4_0_codes(qs, out);
        out.iter_mut().for_each(|v| *v *= d);
    }

    #[inline(always)]
    fn nf4_block(qs: &[u8], d: f32, out: &mut [f32]) {
        quant::nf4_codes(qs, out);
        out.iter_mut().for_each(|v| *v *= d);
    }
}

/// AVX2 + FMA. Only for code inside a function compiled with `avx2,fma` enabled (see the module
/// doc); the kernel checks the CPU before entering it.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2 {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        use std::arch::x86_64::*;
        let n = a.len().min(b.len());
        let full = n / 16 * 16;
        // SAFETY: every load reads 8 values inside `a[..n]` / `b[..n]` (i + 16 ≤ full ≤ n); the
        // instructions exist because this runs only inside the AVX2+FMA kernel (module doc).
        let mut s = unsafe {
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut i = 0;
            while i < full {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            let acc = _mm256_add_ps(acc0, acc1);
            let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
            _mm_cvtss_f32(_mm_add_ss(quad, _mm_movehdup_ps(quad)))
        };
        for i in full..n {
            s += a[i] * b[i];
        }
        s
    }

    #[inline(always)]
    fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = x.len().min(y.len());
        let full = n / 8 * 8;
        // SAFETY: loads and stores stay inside `x[..n]` / `y[..n]` (i + 8 ≤ full ≤ n); AVX2+FMA as
        // for `dot`.
        unsafe {
            let va = _mm256_set1_ps(a);
            let (px, py) = (x.as_ptr(), y.as_mut_ptr());
            let mut i = 0;
            while i < full {
                let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
                _mm256_storeu_ps(py.add(i), r);
                i += 8;
            }
        }
        for i in full..n {
            y[i] += a * x[i];
        }
    }

    #[inline(always)]
    fn scores(q: &[f32], d: usize, keys: &[f32], out: &mut [f32], stride: usize) {
        let (nq, n) = (q.len() / d.max(1), keys.len() / d.max(1));
        let mut r = 0;
        while r < nq {
            let m = (nq - r).min(4);
            let (q, out) = (&q[r * d..(r + m) * d], &mut out[r * stride..]);
            match m {
                1 => score_rows::<1, 4>(q, d, keys, n, out, stride),
                2 => score_rows::<2, 4>(q, d, keys, n, out, stride),
                3 => score_rows::<3, 4>(q, d, keys, n, out, stride),
                _ => score_rows::<4, 2>(q, d, keys, n, out, stride),
            }
            r += m;
        }
    }

    #[inline(always)]
    fn accumulate(p: &[f32], stride: usize, vals: &[f32], d: usize, acc: &mut [f32]) {
        let (nq, n) = (acc.len() / d.max(1), vals.len() / d.max(1));
        let mut r = 0;
        while r < nq {
            let m = (nq - r).min(4);
            let (p, acc) = (&p[r * stride..], &mut acc[r * d..(r + m) * d]);
            match m {
                1 => acc_rows::<1, 4>(p, stride, vals, d, n, acc),
                2 => acc_rows::<2, 4>(p, stride, vals, d, n, acc),
                3 => acc_rows::<3, 4>(p, stride, vals, d, n, acc),
                _ => acc_rows::<4, 2>(p, stride, vals, d, n, acc),
            }
            r += m;
        }
    }

    #[inline(always)]
    fn scale(d: f16) -> f32 {
        use std::arch::x86_64::*;
        // SAFETY: F16C is enabled in the kernel (module doc); register-only operations.
        unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(d.to_bits() as i32))) }
    }

    #[inline(always)]
    fn f16_to_f32(src: &[f16], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = src.len().min(out.len());
        let full = n / 8 * 8;
        // SAFETY: 8 halves (16 bytes) read and 8 floats written per step, inside `[..n]`;
        // F16C is enabled in the kernel (module doc).
        unsafe {
            let (ps, po) = (src.as_ptr() as *const __m128i, out.as_mut_ptr());
            for i in (0..full).step_by(8) {
                _mm256_storeu_ps(po.add(i), _mm256_cvtph_ps(_mm_loadu_si128(ps.byte_add(2 * i))));
            }
        }
        for i in full..n {
            out[i] = src[i].to_f32();
        }
    }

    #[inline(always)]
    fn bf16_to_f32(src: &[bf16], out: &mut [f32]) {
        // why: a shift and a widening; the auto-vectorizer does it well under AVX2.
        Portable::bf16_to_f32(src, out);
    }

    #[inline(always)]
    fn q8_0_block(qs: &[u8], d: f32, out: &mut [f32]) {
        use std::arch::x86_64::*;
        if out.len() != 32 || qs.len() < 32 {
            return Portable::q8_0_block(qs, d, out);
        }
        // SAFETY: a full block: 32 code bytes read (4 × 8), 32 floats written.
        unsafe {
            let vd = _mm256_set1_ps(d);
            for g in 0..4 {
                let b = _mm_loadl_epi64(qs.as_ptr().add(8 * g) as *const __m128i);
                let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * g), _mm256_mul_ps(v, vd));
            }
        }
    }

    #[inline(always)]
    fn q4_0_block(qs: &[u8], d: f32, out: &mut [f32]) {
        use std::arch::x86_64::*;
        if out.len() != 32 || qs.len() < 16 {
            return Portable::q4_0_block(qs, d, out);
        }
        // SAFETY: a full block: 16 code bytes read, 32 floats written.
        // why: fma(u, d, −8d) rounds the exact (u − 8)·d once, like the portable (u − 8) · d.
        unsafe {
            let bytes = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
            let mask = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(bytes, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
            let (vd, off) = (_mm256_set1_ps(d), _mm256_set1_ps(-8.0 * d));
            let po = out.as_mut_ptr();
            for (half, base) in [(lo, 0), (hi, 16)] {
                let a = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(half));
                let b = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(half, 8)));
                _mm256_storeu_ps(po.add(base), _mm256_fmadd_ps(a, vd, off));
                _mm256_storeu_ps(po.add(base + 8), _mm256_fmadd_ps(b, vd, off));
            }
        }
    }

    #[inline(always)]
    fn nf4_block(qs: &[u8], d: f32, out: &mut [f32]) {
        use std::arch::x86_64::*;
        if out.len() != 32 || qs.len() < 16 {
            return Portable::nf4_block(qs, d, out);
        }
        // SAFETY: a full block: 16 code bytes read, 32 floats written; the table loads read the
        // 16 levels (two groups of 8).
        unsafe {
            let levels = quant::NF4_LEVELS.as_ptr();
            let (tab_lo, tab_hi) = (_mm256_loadu_ps(levels), _mm256_loadu_ps(levels.add(8)));
            let bytes = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
            let mask = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(bytes, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
            let vd = _mm256_set1_ps(d);
            let po = out.as_mut_ptr();
            for (half, base) in [(lo, 0), (hi, 16)] {
                for (part, at) in [(half, base), (_mm_srli_si128(half, 8), base + 8)] {
                    let idx = _mm256_cvtepu8_epi32(part);
                    // Index bit 3 picks the upper 8 levels: moved into the sign bit for blendv.
                    let upper = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
                    let level = _mm256_blendv_ps(
                        _mm256_permutevar8x32_ps(tab_lo, idx),
                        _mm256_permutevar8x32_ps(tab_hi, idx),
                        upper,
                    );
                    _mm256_storeu_ps(po.add(at), _mm256_mul_ps(level, vd));
                }
            }
        }
    }
}

/// Horizontal sum of 8 lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY: register-only AVX operations, inside the AVX2 kernel.
    unsafe {
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let q = _mm_add_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)))
    }
}

/// Scores of M query rows against the key rows, R keys at a time (M·R accumulators in registers:
/// each loaded key vector feeds M FMAs, each query vector R).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn score_rows<const M: usize, const R: usize>(
    q: &[f32],
    d: usize,
    keys: &[f32],
    n: usize,
    out: &mut [f32],
    stride: usize,
) {
    assert!(q.len() >= M * d && keys.len() >= n * d && (n == 0 || out.len() >= (M - 1) * stride + n));
    let mut j = 0;
    while j + R <= n {
        score_tile::<M, R>(q, d, keys, j, out, stride);
        j += R;
    }
    while j < n {
        score_tile::<M, 1>(q, d, keys, j, out, stride);
        j += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn score_tile<const M: usize, const R: usize>(
    q: &[f32],
    d: usize,
    keys: &[f32],
    j: usize,
    out: &mut [f32],
    stride: usize,
) {
    use std::arch::x86_64::*;
    let d8 = d / 8 * 8;
    // SAFETY: `score_rows` checked q (M rows of d), keys (rows j..j+R < n of d); every load reads
    // 8 values at column c + 8 ≤ d8 ≤ d of such a row. AVX2+FMA as for `dot`.
    let acc = unsafe {
        let (pq, pk) = (q.as_ptr(), keys.as_ptr().add(j * d));
        let mut acc = [[_mm256_setzero_ps(); R]; M];
        let mut c = 0;
        while c < d8 {
            let kv: [__m256; R] = std::array::from_fn(|i| _mm256_loadu_ps(pk.add(i * d + c)));
            for (r, row) in acc.iter_mut().enumerate() {
                let qv = _mm256_loadu_ps(pq.add(r * d + c));
                for (a, k) in row.iter_mut().zip(&kv) {
                    *a = _mm256_fmadd_ps(qv, *k, *a);
                }
            }
            c += 8;
        }
        acc
    };
    for (r, row) in acc.iter().enumerate() {
        for (i, a) in row.iter().enumerate() {
            let mut s = hsum(*a);
            for c in d8..d {
                s += q[r * d + c] * keys[(j + i) * d + c];
            }
            out[r * stride + j + i] = s;
        }
    }
}

/// `acc_r += Σ_j p_rj · val_j` for M query rows, 8·G columns at a time (M·G accumulators in
/// registers across all n rows: each loaded value vector feeds M FMAs).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn acc_rows<const M: usize, const G: usize>(
    p: &[f32],
    stride: usize,
    vals: &[f32],
    d: usize,
    n: usize,
    acc: &mut [f32],
) {
    assert!(vals.len() >= n * d && acc.len() >= M * d && (n == 0 || p.len() >= (M - 1) * stride + n));
    let mut c = 0;
    while c + 8 * G <= d {
        acc_tile::<M, G>(p, stride, vals, d, n, acc, c);
        c += 8 * G;
    }
    while c + 8 <= d {
        acc_tile::<M, 1>(p, stride, vals, d, n, acc, c);
        c += 8;
    }
    for cc in c..d {
        for r in 0..M {
            let mut s = acc[r * d + cc];
            for j in 0..n {
                s += p[r * stride + j] * vals[j * d + cc];
            }
            acc[r * d + cc] = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn acc_tile<const M: usize, const G: usize>(
    p: &[f32],
    stride: usize,
    vals: &[f32],
    d: usize,
    n: usize,
    acc: &mut [f32],
    c: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: `acc_rows` checked vals (n rows of d), acc (M rows of d), p (M rows at `stride`, n
    // each); columns c..c + 8G ≤ d. AVX2+FMA as for `dot`.
    unsafe {
        let (pp, pv, pa) = (p.as_ptr(), vals.as_ptr(), acc.as_mut_ptr());
        let mut a: [[__m256; G]; M] =
            std::array::from_fn(|r| std::array::from_fn(|g| _mm256_loadu_ps(pa.add(r * d + c + 8 * g))));
        for j in 0..n {
            let v: [__m256; G] = std::array::from_fn(|g| _mm256_loadu_ps(pv.add(j * d + c + 8 * g)));
            for (r, row) in a.iter_mut().enumerate() {
                let pb = _mm256_set1_ps(*pp.add(r * stride + j));
                for (x, vg) in row.iter_mut().zip(&v) {
                    *x = _mm256_fmadd_ps(pb, *vg, *x);
                }
            }
        }
        for (r, row) in a.iter().enumerate() {
            for (g, x) in row.iter().enumerate() {
                _mm256_storeu_ps(pa.add(r * d + c + 8 * g), *x);
            }
        }
    }
}

/// True when the running CPU can take the [`Avx2`] kernel (AVX2, FMA and F16C).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn check<L: Lanes>(rng: &mut ChaCha8Rng) {
        for n in [0usize, 1, 7, 8, 15, 16, 24, 40, 64, 131] {
            let a: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((L::dot(&a, &b) as f64 - want).abs() < 1e-4, "dot n={n}");
            let mut y = b.clone();
            let s: f32 = rng.random_range(-2.0..2.0);
            L::axpy(s, &a, &mut y);
            for i in 0..n {
                assert!((y[i] - (b[i] + s * a[i])).abs() < 1e-5, "axpy n={n} i={i}");
            }
        }
    }

    #[test]
    fn portable_and_avx2_lanes_are_dot_and_axpy() {
        let seed: u64 = rand::rng().random();
        eprintln!("seed {seed}");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        check::<Portable>(&mut rng);
        same_decodes::<Portable>(&mut rng);
        tiles::<Portable>(&mut rng);
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { check_avx2(&mut rng) };
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn check_avx2(rng: &mut ChaCha8Rng) {
        check::<Avx2>(rng);
        same_decodes::<Avx2>(rng);
        tiles::<Avx2>(rng);
    }

    /// `scores` and `accumulate` against plain f64 loops, for 1..=9 query rows (all tile shapes),
    /// odd widths and row counts, at an offset stride.
    fn tiles<L: Lanes>(rng: &mut ChaCha8Rng) {
        let stride = 37;
        for nq in 1..=9 {
            for (d, n) in [(64usize, 33usize), (40, 7), (24, 1), (20, 5), (3, 4)] {
                let q: Vec<f32> = (0..nq * d).map(|_| rng.random_range(-1.0..1.0)).collect();
                let keys: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut out = vec![f32::NAN; nq * stride];
                L::scores(&q, d, &keys, &mut out, stride);
                for r in 0..nq {
                    for j in 0..n {
                        let want: f64 = (0..d).map(|c| q[r * d + c] as f64 * keys[j * d + c] as f64).sum();
                        assert!(
                            (out[r * stride + j] as f64 - want).abs() < 1e-4,
                            "scores nq={nq} d={d} r={r} j={j}"
                        );
                    }
                }
                let p: Vec<f32> = (0..nq * stride).map(|_| rng.random_range(0.0..1.0)).collect();
                let acc0: Vec<f32> = (0..nq * d).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut acc = acc0.clone();
                L::accumulate(&p, stride, &keys, d, &mut acc);
                for r in 0..nq {
                    for c in 0..d {
                        let want = acc0[r * d + c] as f64
                            + (0..n)
                                .map(|j| p[r * stride + j] as f64 * keys[j * d + c] as f64)
                                .sum::<f64>();
                        assert!(
                            (acc[r * d + c] as f64 - want).abs() < 1e-4,
                            "accumulate nq={nq} d={d} r={r} c={c}"
                        );
                    }
                }
            }
        }
    }

    /// Every decoder of `L` gives the portable one's values (full and partial blocks; `==`, since the
    /// fused q4_0 form may give +0 where the portable one gives −0).
    fn same_decodes<L: Lanes>(rng: &mut ChaCha8Rng) {
        for _ in 0..200 {
            let n = if rng.random_bool(0.7) {
                32
            } else {
                rng.random_range(1..32)
            };
            let bytes: Vec<u8> = (0..32).map(|_| rng.random()).collect();
            let d: f32 = rng.random_range(-3.0..3.0);
            let (mut a, mut b) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            type Decode = fn(&[u8], f32, &mut [f32]);
            let pairs: [(Decode, Decode, usize); 3] = [
                (L::q8_0_block, Portable::q8_0_block, n),
                (L::q4_0_block, Portable::q4_0_block, n.div_ceil(2)),
                (L::nf4_block, Portable::nf4_block, n.div_ceil(2)),
            ];
            for (i, (fast, slow, used)) in pairs.into_iter().enumerate() {
                fast(&bytes[..used], d, &mut a);
                slow(&bytes[..used], d, &mut b);
                assert!(
                    a.iter().zip(&b).all(|(x, y)| x == y),
                    "decoder {i}, n={n}: {a:?} vs {b:?}"
                );
            }
            let m = rng.random_range(1..80);
            let xs: Vec<f32> = (0..m).map(|_| rng.random_range(-100.0..100.0)).collect();
            let halves: Vec<f16> = xs.iter().map(|&x| f16::from_f32(x)).collect();
            let brains: Vec<bf16> = xs.iter().map(|&x| bf16::from_f32(x)).collect();
            let (mut a, mut b) = (vec![f32::NAN; m], vec![f32::NAN; m]);
            L::f16_to_f32(&halves, &mut a);
            Portable::f16_to_f32(&halves, &mut b);
            assert_eq!(a, b);
            L::bf16_to_f32(&brains, &mut a);
            assert!(a.iter().zip(&brains).all(|(x, y)| *x == y.to_f32()));
        }
    }
}
