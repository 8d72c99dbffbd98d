//! Quantize / dequantize one block (≤ 32 values of one head) for each quantized [`CacheKind`](super::CacheKind).
//!
//! Formulas (the public anchors are llama.cpp's `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref`
//! and bitsandbytes' `dQuantizeNF4`), all in f32, the scale stored as f16:
//!
//! - **q8_0**: `amax = max|x|`, `d = amax / 127`, `id = d ? 1/d : 0`, `q = roundf(x · id)` as i8
//!   (`roundf`: half away from zero, Rust's `f32::round`). Dequantized: `q · f16(d)`.
//! - **q4_0**: `max` = the signed element of largest magnitude (the first one on ties),
//!   `d = max / −8`, `id = d ? 1/d : 0`, nibble `u = min(15, trunc(x · id + 8.5))` (half up in the
//!   shifted domain; the max element maps exactly to −8). Dequantized: `(u − 8) · f16(d)`.
//! - **nf4**: `d = absmax`, `y = x · (1/d)`, nibble = index of the nearest of the 16 NF4 levels
//!   ([`NF4_LEVELS`], bitsandbytes' code book), decided by the midpoints with `y > mid` (a value on
//!   a midpoint goes to the lower level, as bitsandbytes). Dequantized: `level[u] · f16(d)`.
//!
//! Codes are computed from the f32 scale (as llama.cpp does) and dequantized with the stored f16
//! scale. A scale beyond the f16 range saturates at ±65504 (codes are clamped), so extreme inputs
//! stay finite instead of turning into infinities.
//!
//! **Nibble packing** (q4_0, nf4) for a block of `n` values: `half = ⌈n/2⌉` bytes; byte `j` holds
//! value `j` in its low nibble and value `j + half` in its high nibble (0 when `j + half ≥ n`).
//! For `n = 32` this is exactly llama.cpp's `block_q4_0.qs` layout.

use half::f16;

/// bitsandbytes' NF4 code book (normal-float quantiles, exactly as in `dDequantizeNF4`).
#[allow(clippy::excessive_precision)] // why: bitsandbytes' literals, kept verbatim.
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// Decision thresholds between consecutive NF4 levels: their midpoints (bitsandbytes'
/// `dQuantizeNF4` compares against the same midpoints with `>`).
const NF4_MIDPOINTS: [f32; 15] = {
    let mut mids = [0.0f32; 15];
    let mut k = 0;
    while k < 15 {
        mids[k] = (NF4_LEVELS[k] + NF4_LEVELS[k + 1]) / 2.0;
        k += 1;
    }
    mids
};

const F16_MAX: f32 = 65504.0;

/// Bytes of nibble codes for a block of `n` values.
pub fn nibble_bytes(n: usize) -> usize {
    n.div_ceil(2)
}

/// q8_0 of one block `x` (len ≤ 32) into `qs` (same len); returns the f16 scale.
pub fn quantize_q8_0(x: &[f32], qs: &mut [i8]) -> f16 {
    debug_assert_eq!(x.len(), qs.len());
    let amax = x
        .iter()
        .fold(0.0f32, |m, v| if m < v.abs() { v.abs() } else { m });
    let d = (amax / 127.0).min(F16_MAX);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round().clamp(-127.0, 127.0) as i8;
    }
    f16::from_f32(d)
}

/// Inverse of [`quantize_q8_0`]: `out[i] = qs[i] · d`.
pub fn dequantize_q8_0(d: f16, qs: &[i8], out: &mut [f32]) {
    let d = d.to_f32();
    for (o, &q) in out.iter_mut().zip(qs) {
        *o = q as f32 * d;
    }
}

/// q4_0 of one block `x` (len n ≤ 32) into `qs` (len ⌈n/2⌉, packed as the module doc says);
/// returns the f16 scale.
pub fn quantize_q4_0(x: &[f32], qs: &mut [u8]) -> f16 {
    debug_assert_eq!(qs.len(), nibble_bytes(x.len()));
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = (max / -8.0).clamp(-F16_MAX, F16_MAX);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // why: `as u8` truncates toward zero (and saturates), like the C cast of a value ≥ 0.
    pack_nibbles(x, qs, |v| ((v * id + 8.5) as u8).min(15));
    f16::from_f32(d)
}

/// Inverse of [`quantize_q4_0`] for a block of `out.len()` values: `(u − 8) · d`.
pub fn dequantize_q4_0(d: f16, qs: &[u8], out: &mut [f32]) {
    let d = d.to_f32();
    unpack_nibbles(qs, out, |u| (u as f32 - 8.0) * d);
}

/// NF4 of one block `x` (len n ≤ 32) into `qs` (len ⌈n/2⌉); returns the f16 absmax scale.
pub fn quantize_nf4(x: &[f32], qs: &mut [u8]) -> f16 {
    debug_assert_eq!(qs.len(), nibble_bytes(x.len()));
    let amax = x
        .iter()
        .fold(0.0f32, |m, v| if m < v.abs() { v.abs() } else { m });
    let d = amax.min(F16_MAX);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    pack_nibbles(x, qs, |v| nf4_index(v * id));
    f16::from_f32(d)
}

/// Inverse of [`quantize_nf4`] for a block of `out.len()` values: `level[u] · d`.
pub fn dequantize_nf4(d: f16, qs: &[u8], out: &mut [f32]) {
    let d = d.to_f32();
    unpack_nibbles(qs, out, |u| NF4_LEVELS[u as usize] * d);
}

/// Index of the NF4 level nearest to `y` (clamped to [−1, 1]); a value exactly on a midpoint
/// goes to the lower level. NaN maps to the zero level.
pub fn nf4_index(y: f32) -> u8 {
    NF4_MIDPOINTS.iter().filter(|&&m| y > m).count() as u8
}

fn pack_nibbles(x: &[f32], qs: &mut [u8], code: impl Fn(f32) -> u8) {
    let half = nibble_bytes(x.len());
    for (j, byte) in qs.iter_mut().enumerate() {
        let lo = code(x[j]);
        let hi = x.get(j + half).map_or(0, |&v| code(v));
        *byte = lo | (hi << 4);
    }
}

fn unpack_nibbles(qs: &[u8], out: &mut [f32], value: impl Fn(u8) -> f32) {
    let half = nibble_bytes(out.len());
    let (lo, hi) = out.split_at_mut(half);
    for (j, &byte) in qs.iter().enumerate() {
        lo[j] = value(byte & 0x0F);
        if let Some(h) = hi.get_mut(j) {
            *h = value(byte >> 4);
        }
    }
}

/// The codes of one q8_0 block as f32, unscaled (`out[i] = qs[i]`), for the fused dot products.
#[inline(always)]
pub(crate) fn q8_0_codes(qs: &[u8], out: &mut [f32]) {
    for (o, &q) in out.iter_mut().zip(qs) {
        *o = q as i8 as f32;
    }
}

/// The codes of one q4_0 block of `out.len()` values as f32, unscaled (`u − 8`).
#[inline(always)]
pub(crate) fn q4_0_codes(qs: &[u8], out: &mut [f32]) {
    let half = nibble_bytes(out.len());
    if out.len() == 2 * half {
        // why: the full-block fast path has no bounds branch, so it vectorizes.
        let (lo, hi) = out.split_at_mut(half);
        for ((l, h), &byte) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
            *l = (byte & 0x0F) as f32 - 8.0;
            *h = (byte >> 4) as f32 - 8.0;
        }
    } else {
        unpack_nibbles(qs, out, |u| u as f32 - 8.0);
    }
}

/// Both NF4 levels of every byte value: `NF4_PAIRS[b] = (level[b & 15], level[b >> 4])`.
static NF4_PAIRS: [[f32; 2]; 256] = {
    let mut table = [[0.0f32; 2]; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = [NF4_LEVELS[b & 15], NF4_LEVELS[b >> 4]];
        b += 1;
    }
    table
};

/// The codes of one NF4 block of `out.len()` values as f32 levels, unscaled.
#[inline(always)]
pub(crate) fn nf4_codes(qs: &[u8], out: &mut [f32]) {
    let half = nibble_bytes(out.len());
    if out.len() == 2 * half {
        let (lo, hi) = out.split_at_mut(half);
        for ((l, h), &byte) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
            let [a, b] = NF4_PAIRS[byte as usize];
            *l = a;
            *h = b;
        }
    } else {
        unpack_nibbles(qs, out, |u| NF4_LEVELS[u as usize]);
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;

    /// Fresh random blocks every run (the seed is printed so a failure can be replayed).
    fn rng() -> ChaCha8Rng {
        let seed: u64 = rand::rng().random();
        eprintln!("seed {seed}");
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn random_block(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        let scale = 10f32.powf(rng.random_range(-3.0..3.0));
        let mut x: Vec<f32> = (0..n)
            .map(|_| {
                let z: f32 = StandardNormal.sample(rng);
                scale * z
            })
            .collect();
        if rng.random_bool(0.3) {
            // An outlier, sometimes negative: exercises the signed max of q4_0.
            let i = rng.random_range(0..n);
            x[i] *= rng.random_range(-20.0..20.0);
        }
        x
    }

    const LENS: [usize; 8] = [32, 32, 31, 24, 8, 7, 3, 1];

    #[test]
    fn q8_0_matches_the_llama_cpp_formula_and_its_error_bound() {
        let mut rng = rng();
        for _ in 0..300 {
            for n in LENS {
                let x = random_block(&mut rng, n);
                let mut qs = vec![0i8; n];
                let d16 = quantize_q8_0(&x, &mut qs);
                let amax = x.iter().map(|v| v.abs()).fold(0.0, f32::max);
                let d = amax / 127.0;
                assert_eq!(d16, f16::from_f32(d));
                let id = 1.0 / d;
                let mut deq = vec![f32::NAN; n];
                dequantize_q8_0(d16, &qs, &mut deq);
                let bound = d / 2.0 + 127.0 * (d - d16.to_f32()).abs() + 1e-6 * amax;
                for i in 0..n {
                    assert_eq!(qs[i] as f32, (x[i] * id).round(), "x={} d={d}", x[i]);
                    assert!(
                        (x[i] - deq[i]).abs() <= bound,
                        "x={} deq={} bound={bound}",
                        x[i],
                        deq[i]
                    );
                }
            }
        }
    }

    #[test]
    fn q8_0_rounds_half_away_from_zero() {
        // amax 127 → d = 1 exactly: x = ±2.5 must give ±3 (roundf), not ±2 (to even).
        let mut x = vec![0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 0.5;
        let mut qs = vec![0i8; 32];
        assert_eq!(quantize_q8_0(&x, &mut qs), f16::ONE);
        assert_eq!(&qs[..4], &[127, 3, -3, 1]);
    }

    #[test]
    fn q4_0_matches_the_llama_cpp_formula_and_its_error_bound() {
        let mut rng = rng();
        for _ in 0..300 {
            for n in LENS {
                let x = random_block(&mut rng, n);
                let mut qs = vec![0u8; nibble_bytes(n)];
                let d16 = quantize_q4_0(&x, &mut qs);
                let imax = (0..n).fold(0, |b, i| if x[b].abs() < x[i].abs() { i } else { b });
                let d = x[imax] / -8.0;
                assert_eq!(d16, f16::from_f32(d));
                let id = 1.0 / d;
                let half = n.div_ceil(2);
                let nib = |i: usize| if i < half { qs[i] & 15 } else { qs[i - half] >> 4 };
                let mut deq = vec![f32::NAN; n];
                dequantize_q4_0(d16, &qs, &mut deq);
                assert_eq!(nib(imax), 0, "the max-magnitude element maps to −8");
                for i in 0..n {
                    let y = x[i] * id;
                    assert_eq!(nib(i), ((y + 8.5).trunc() as u8).min(15), "y={y}");
                    let step = (y - 7.0).max(0.5);
                    let bound = d.abs() * step + 8.0 * (d - d16.to_f32()).abs() + 1e-6 * x[imax].abs();
                    assert!(
                        (x[i] - deq[i]).abs() <= bound,
                        "x={} deq={} bound={bound}",
                        x[i],
                        deq[i]
                    );
                }
                if n % 2 == 1 {
                    assert_eq!(qs[half - 1] >> 4, 0, "the unused high nibble is zero");
                }
            }
        }
    }

    #[test]
    fn q4_0_golden_block() {
        // max = −4 → d = 0.5, id = 2; 1.0 → 2+8 = 10; 0.25 → ⌊0.5+8.5⌋ = 9; 3.9 → min(15, 16) = 15.
        let mut x = vec![0.0f32; 32];
        x[0] = -4.0;
        x[1] = 1.0;
        x[16] = 0.25;
        x[17] = 3.9;
        let mut qs = vec![0u8; 16];
        assert_eq!(quantize_q4_0(&x, &mut qs), f16::from_f32(0.5));
        assert_eq!(qs[0], 9 << 4, "0 → nibble 0 (low), 0.25 → 9 (high)");
        assert_eq!(qs[1], (15 << 4) | 10);
        assert!(qs[2..].iter().all(|&b| b == 0x88));
    }

    #[test]
    fn nf4_picks_the_nearest_level_and_bounds_its_error() {
        let mut rng = rng();
        for _ in 0..300 {
            for n in LENS {
                let x = random_block(&mut rng, n);
                let mut qs = vec![0u8; nibble_bytes(n)];
                let d16 = quantize_nf4(&x, &mut qs);
                let amax = x.iter().map(|v| v.abs()).fold(0.0, f32::max);
                assert_eq!(d16, f16::from_f32(amax));
                let mut deq = vec![f32::NAN; n];
                dequantize_nf4(d16, &qs, &mut deq);
                let half = n.div_ceil(2);
                for i in 0..n {
                    let u = if i < half { qs[i] & 15 } else { qs[i - half] >> 4 } as usize;
                    let y = x[i] * (1.0 / amax);
                    let best = (0..16)
                        .map(|k| (NF4_LEVELS[k] - y).abs())
                        .fold(f32::INFINITY, f32::min);
                    assert!((NF4_LEVELS[u] - y).abs() <= best + 1e-6, "y={y} got level {u}");
                    // Largest gap between levels is −0.6961928 − (−1): half of it bounds the error.
                    let bound = amax * 0.152 + (amax - d16.to_f32()).abs() + 1e-6 * amax;
                    assert!((x[i] - deq[i]).abs() <= bound, "x={} deq={}", x[i], deq[i]);
                }
            }
        }
    }

    #[test]
    fn nf4_midpoints_are_the_midpoints_and_ties_go_down() {
        for k in 0..15 {
            let mid = (NF4_LEVELS[k] + NF4_LEVELS[k + 1]) / 2.0;
            assert_eq!(NF4_MIDPOINTS[k], mid, "midpoint {k}");
            assert_eq!(nf4_index(NF4_MIDPOINTS[k]) as usize, k);
            assert_eq!(nf4_index(NF4_LEVELS[k]) as usize, k);
        }
        assert_eq!(nf4_index(1.0), 15);
        assert_eq!(nf4_index(-1.0), 0);
        assert_eq!(nf4_index(f32::NAN), 0);
    }

    #[test]
    fn zero_blocks_and_huge_values_stay_finite() {
        let zeros = vec![0.0f32; 32];
        let (mut q8, mut q4) = (vec![1i8; 32], vec![1u8; 16]);
        assert_eq!(quantize_q8_0(&zeros, &mut q8), f16::ZERO);
        assert!(q8.iter().all(|&q| q == 0));
        assert_eq!(quantize_q4_0(&zeros, &mut q4), f16::ZERO);
        let mut out = vec![f32::NAN; 32];
        dequantize_q4_0(f16::ZERO, &q4, &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
        let mut huge = vec![1.0f32; 32];
        huge[5] = 3.0e9;
        for kind_out in [
            {
                quantize_q8_0(&huge, &mut q8);
                let mut o = vec![0.0; 32];
                dequantize_q8_0(f16::MAX, &q8, &mut o);
                o
            },
            {
                let d = quantize_nf4(&huge, &mut q4);
                let mut o = vec![0.0; 32];
                dequantize_nf4(d, &q4, &mut o);
                o
            },
        ] {
            assert!(kind_out.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn unscaled_code_helpers_agree_with_the_dequantizers() {
        let mut rng = rng();
        for n in LENS {
            let x = random_block(&mut rng, n);
            let mut q8 = vec![0i8; n];
            let d = quantize_q8_0(&x, &mut q8);
            let (mut a, mut b) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            dequantize_q8_0(d, &q8, &mut a);
            let bytes: Vec<u8> = q8.iter().map(|&q| q as u8).collect();
            q8_0_codes(&bytes, &mut b);
            assert!(a.iter().zip(&b).all(|(a, b)| *a == b * d.to_f32()));

            let mut q4 = vec![0u8; nibble_bytes(n)];
            for (quant, deq, codes) in [
                (
                    quantize_q4_0 as fn(&[f32], &mut [u8]) -> f16,
                    dequantize_q4_0 as fn(f16, &[u8], &mut [f32]),
                    q4_0_codes as fn(&[u8], &mut [f32]),
                ),
                (quantize_nf4, dequantize_nf4, nf4_codes),
            ] {
                let d = quant(&x, &mut q4);
                a.fill(f32::NAN);
                b.fill(f32::NAN);
                deq(d, &q4, &mut a);
                codes(&q4, &mut b);
                assert!(a.iter().zip(&b).all(|(a, b)| *a == b * d.to_f32()), "n={n}");
            }
        }
    }
}
