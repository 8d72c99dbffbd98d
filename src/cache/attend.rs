//! Grouped attention that reads the stored rows directly (no dequantized copy of the cache).
//!
//! For every (batch, KV head) and the `g · t` query rows of its group, over chunks of 128
//! positions: the chunk's K rows are decoded block by block (`code × scale`) into an L1 tile and
//! scores `s_j = q · k_j` come from a register-tiled Q·Kᵀ; an online softmax in f32 runs over the
//! chunk (a per-chunk score buffer, never the full score matrix); the V rows are decoded likewise and
//! `Σ p_j v_j` accumulates as a register-tiled P·V. Long caches are split along positions into
//! independent pieces (rayon) whose softmax states are merged with the log-sum-exp rule
//! (flash-decoding). The optional null key/value is one more, always visible, exact f32 position.
//! The kernel is generic over `simd::Lanes`: AVX2+FMA+F16C where the CPU has it, else portable.
//!
//! Shapes: q (b, n_heads, t, dk), pre-scaled by the caller (as [`crate::ops::sdpa`]); the store
//! holds n_kv heads; query head h uses KV head h / (n_heads / n_kv). Output (b, n_heads, t, dv) in
//! q's dtype and on q's device. With `causal`, query i of t sits at position `len − t + i`.
//! Reference: `grouped_attention` on [`QuantKvStore::dequantize_all`].

use std::ops::Range;

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::error::CacheError;
use super::rotate::hadamard_in_place;
use super::simd::{self, Lanes, Portable};
use super::store::{HeadRows, QuantKvStore, host_f32};
use crate::ops::sdpa::NullKv;

/// Positions per online-softmax chunk (the score buffer is `g · t × CHUNK`).
const CHUNK: usize = 128;
/// Smallest piece of positions worth a rayon task.
const MIN_SPLIT: usize = 256;

/// Options of [`QuantKvStore::attend`].
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Mask positions after each query's own (only matters for t > 1). Default: true.
    pub causal: bool,
    /// Split the work over rayon's pool. Default: true.
    pub parallel: bool,
    /// Use the portable kernel even where the AVX2 + FMA one could run (tests, comparisons).
    /// Default: false.
    pub portable: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            causal: true,
            parallel: true,
            portable: false,
        }
    }
}

/// The softmax state of some query rows over some positions: running max, normalizer, Σ p·v.
struct Partial {
    m: Vec<f32>,
    l: Vec<f32>,
    acc: Vec<f32>,
    /// Σ p·v over stored rows whose V is rotated (`rotate_v`; empty otherwise), rotated back
    /// once after the merge: the rotation is linear, so it commutes with the weighted sum.
    acc_rot: Vec<f32>,
}

impl Partial {
    fn empty(nq: usize, dv: usize, rotate_v: bool) -> Self {
        Self {
            m: vec![f32::NEG_INFINITY; nq],
            l: vec![0.0; nq],
            acc: vec![0.0; nq * dv],
            acc_rot: if rotate_v { vec![0.0; nq * dv] } else { Vec::new() },
        }
    }

    /// Fold `other` into `self` (log-sum-exp merge).
    fn merge(&mut self, other: &Partial) {
        let dv = self.acc.len() / self.m.len().max(1);
        for i in 0..self.m.len() {
            let m = self.m[i].max(other.m[i]);
            if m == f32::NEG_INFINITY {
                continue;
            }
            let (a, b) = ((self.m[i] - m).exp(), (other.m[i] - m).exp());
            self.l[i] = self.l[i] * a + other.l[i] * b;
            let (acc, oacc) = (&mut self.acc[i * dv..][..dv], &other.acc[i * dv..][..dv]);
            acc.iter_mut().zip(oacc).for_each(|(x, y)| *x = *x * a + y * b);
            if !self.acc_rot.is_empty() {
                let (acc, oacc) = (&mut self.acc_rot[i * dv..][..dv], &other.acc_rot[i * dv..][..dv]);
                acc.iter_mut().zip(oacc).for_each(|(x, y)| *x = *x * a + y * b);
            }
            self.m[i] = m;
        }
    }
}

/// What one (batch, KV head) needs: its rows and its query rows (plain and, for rotated K, rotated).
struct HeadJob<'a> {
    head: &'a HeadRows,
    q: Vec<f32>,
    q_rot: Option<Vec<f32>>,
    /// Per query row: q·(the head's mean key), added back to the scores of stored rows.
    q_center: Option<Vec<f32>>,
}

impl QuantKvStore {
    /// Attention of q (b, n_heads, t, dk) over every cached position (see the module doc).
    pub fn attend(&self, q: &Tensor, null: Option<NullKv>, opts: DecodeOptions) -> Result<Tensor> {
        let spec = self.spec();
        let (b, nh, t, dq) = q.dims4()?;
        let (n_kv, dk, dv, len) = (spec.n_kv_heads, spec.k.width(), spec.v.width(), self.len());
        if b != spec.batch || dq != dk {
            return Err(CacheError::Shape {
                what: "q",
                expected: format!("[{}, n_heads, t, {dk}]", spec.batch),
                found: q.dims().to_vec(),
            }
            .into());
        }
        if nh % n_kv != 0 {
            return Err(CacheError::HeadGrouping {
                n_heads: nh,
                n_kv_heads: n_kv,
            }
            .into());
        }
        if (opts.causal && t > len) || (len == 0 && null.is_none()) {
            return Err(CacheError::QueriesBeyondCache { t, len }.into());
        }
        let (g, nq) = (nh / n_kv, nh / n_kv * t);
        let qf = host_f32(q)?;
        let nulls = match &null {
            Some(n) => Some((host_f32(n.k)?, host_f32(n.v)?)),
            None => None,
        };
        if let Some((nk, nv)) = &nulls
            && (nk.len() != n_kv * dk || nv.len() != n_kv * dv)
        {
            return Err(CacheError::Shape {
                what: "null k/v",
                expected: format!("[{n_kv}, {dk}] and [{n_kv}, {dv}]"),
                found: vec![nk.len(), nv.len()],
            }
            .into());
        }

        // Query rows of one (batch, KV head), ordered (group member, time): row gi·t + ti.
        let jobs: Vec<HeadJob> = (0..b * n_kv)
            .map(|i| {
                let (bi, hi) = (i / n_kv, i % n_kv);
                let mut rows = Vec::with_capacity(nq * dk);
                for gi in 0..g {
                    let head = hi * g + gi;
                    rows.extend_from_slice(&qf[((bi * nh + head) * t) * dk..][..t * dk]);
                }
                let q_rot = spec.rotate_k.then(|| {
                    let mut r = rows.clone();
                    for row in r.chunks_exact_mut(dk) {
                        for (off, s) in spec.k.offsets() {
                            hadamard_in_place(&mut row[off..off + s.width]);
                        }
                    }
                    r
                });
                let head = &self.heads()[i];
                let q_center = (!head.k_center.is_empty()).then(|| {
                    rows.chunks_exact(dk)
                        .map(|r| r.iter().zip(&head.k_center).map(|(a, b)| a * b).sum())
                        .collect()
                });
                HeadJob {
                    head,
                    q: rows,
                    q_rot,
                    q_center,
                }
            })
            .collect();

        let splits = if opts.parallel {
            let target = 4 * rayon::current_num_threads();
            target.div_ceil(jobs.len()).min(len.div_ceil(MIN_SPLIT)).max(1)
        } else {
            1
        };
        let piece = len.div_ceil(splits).max(1);
        let tasks: Vec<(usize, Range<usize>)> = (0..jobs.len())
            .flat_map(|j| (0..splits).map(move |s| (j, (s * piece).min(len)..((s + 1) * piece).min(len))))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        let run = |(j, range): &(usize, Range<usize>)| self.attend_piece(&jobs[*j], range.clone(), t, opts);
        let partials: Vec<Partial> = if opts.parallel && tasks.len() > 1 {
            tasks.par_iter().map(run).collect()
        } else {
            tasks.iter().map(run).collect()
        };

        // why: poisoned, so a row the loop below forgets shows up as NaN in the tests.
        let mut out = vec![f32::NAN; b * nh * t * dv];
        let mut parts = tasks.iter().zip(&partials).peekable();
        for (j, job) in jobs.iter().enumerate() {
            let mut state = match &nulls {
                Some((nk, nv)) => {
                    let mut p =
                        null_partial(&job.q, &nk[(j % n_kv) * dk..][..dk], &nv[(j % n_kv) * dv..][..dv]);
                    if spec.rotate_v {
                        p.acc_rot = vec![0.0; nq * dv];
                    }
                    p
                }
                None => Partial::empty(nq, dv, spec.rotate_v),
            };
            while let Some(((_, _), p)) = parts.next_if(|((tj, _), _)| *tj == j) {
                state.merge(p);
            }
            if spec.rotate_v {
                for r in 0..nq {
                    let rot = &mut state.acc_rot[r * dv..][..dv];
                    for (off, s) in spec.v.offsets() {
                        hadamard_in_place(&mut rot[off..off + s.width]);
                    }
                    state.acc[r * dv..][..dv]
                        .iter_mut()
                        .zip(rot.iter())
                        .for_each(|(a, b)| *a += b);
                }
            }
            // Query row gi·t + ti of job (bi, hi) is output (bi, hi·g + gi, ti).
            for r in 0..nq {
                let dst = &mut out[(j * nq + r) * dv..][..dv];
                let inv = 1.0 / state.l[r];
                dst.iter_mut()
                    .zip(&state.acc[r * dv..][..dv])
                    .for_each(|(o, a)| *o = a * inv);
            }
        }
        Tensor::from_vec(out, (b, nh, t, dv), &candle_core::Device::Cpu)?
            .to_dtype(q.dtype())?
            .to_device(q.device())
    }

    /// The softmax state of one job's query rows over positions `range`, with the AVX2 + FMA
    /// build of the kernel when the CPU has it (the same Rust code, compiled twice).
    fn attend_piece(&self, job: &HeadJob, range: Range<usize>, t: usize, opts: DecodeOptions) -> Partial {
        #[cfg(target_arch = "x86_64")]
        if !opts.portable && simd::has_avx2_fma() {
            // SAFETY: `piece_avx2` requires AVX2, FMA and F16C, which the CPU was just checked to have.
            return unsafe { piece_avx2(self, job, range, t, opts.causal) };
        }
        piece::<Portable>(self, job, range, t, opts.causal)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn piece_avx2(store: &QuantKvStore, job: &HeadJob, range: Range<usize>, t: usize, causal: bool) -> Partial {
    piece::<simd::Avx2>(store, job, range, t, causal)
}

/// The kernel, per chunk of positions: decode the chunk's K rows (all segments, scales applied)
/// into a scratch tile, scores = Q·Kᵀ as a register-tiled micro-GEMM, online softmax, decode the
/// V rows, acc += P·V likewise. Stored rows and fp16-window rows of a chunk are separate parts (the
/// stored K rows pair with the rotated query when K is rotated).
#[inline(always)]
fn piece<L: Lanes>(
    store: &QuantKvStore,
    job: &HeadJob,
    range: Range<usize>,
    t: usize,
    causal: bool,
) -> Partial {
    let spec = store.spec();
    let (dk, dv, len) = (spec.k.width(), spec.v.width(), store.len());
    let nq = job.q.len() / dk;
    let mut state = Partial::empty(nq, dv, spec.rotate_v);
    let mut scores = vec![0.0f32; nq * CHUNK];
    let (mut ktile, mut vtile) = (vec![0.0f32; CHUNK * dk], vec![0.0f32; CHUNK * dv]);
    let window_start = len - store.residual_len();
    let q_stored = job.q_rot.as_deref().unwrap_or(&job.q);
    for c in range.clone().step_by(CHUNK) {
        let chunk = c..(c + CHUNK).min(range.end);
        let n = chunk.len();
        let split = window_start.clamp(chunk.start, chunk.end);
        let parts = [(chunk.start..split, false), (split..chunk.end, true)];
        for (part, window) in parts.iter().filter(|(p, _)| !p.is_empty()) {
            let keys = rows_tile::<L>(store, job.head, part.clone(), *window, Stream::K, &mut ktile);
            let q = if *window { &job.q[..] } else { q_stored };
            L::scores(q, dk, keys, &mut scores[part.start - chunk.start..], CHUNK);
            if let (false, Some(qc)) = (*window, &job.q_center) {
                for (r, c) in qc.iter().enumerate() {
                    let from = r * CHUNK + part.start - chunk.start;
                    scores[from..from + part.len()].iter_mut().for_each(|s| *s += c);
                }
            }
        }
        if causal && t > 1 {
            for r in 0..nq {
                let last = len - t + r % t;
                let first_hidden = (last + 1).saturating_sub(chunk.start).min(n);
                scores[r * CHUNK + first_hidden..r * CHUNK + n].fill(f32::NEG_INFINITY);
            }
        }
        for r in 0..nq {
            let row = &mut scores[r * CHUNK..r * CHUNK + n];
            let m_new = max(row).max(state.m[r]);
            if m_new == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            let corr = (state.m[r] - m_new).exp();
            row.iter_mut().for_each(|s| *s = exp_fast(*s - m_new));
            state.l[r] = state.l[r] * corr + sum(row);
            if corr != 1.0 {
                state.acc[r * dv..][..dv].iter_mut().for_each(|a| *a *= corr);
                if spec.rotate_v {
                    state.acc_rot[r * dv..][..dv].iter_mut().for_each(|a| *a *= corr);
                }
            }
            state.m[r] = m_new;
        }
        for (part, window) in parts.iter().filter(|(p, _)| !p.is_empty()) {
            let vals = rows_tile::<L>(store, job.head, part.clone(), *window, Stream::V, &mut vtile);
            let acc = if spec.rotate_v && !*window {
                &mut state.acc_rot
            } else {
                &mut state.acc
            };
            L::accumulate(&scores[part.start - chunk.start..], CHUNK, vals, dv, acc);
        }
    }
    state
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    K,
    V,
}

/// Positions `part` of one stream as f32 rows (`part.len() × width`): the stored slice itself for
/// a single fp32 segment, else decoded into `tile`.
#[inline(always)]
fn rows_tile<'a, L: Lanes>(
    store: &QuantKvStore,
    head: &'a HeadRows,
    part: Range<usize>,
    window: bool,
    stream: Stream,
    tile: &'a mut [f32],
) -> &'a [f32] {
    let spec = store.spec();
    let (segs, ring, stream_spec) = match stream {
        Stream::K => (&head.k, &head.k_ring, &spec.k),
        Stream::V => (&head.v, &head.v_ring, &spec.v),
    };
    let w = stream_spec.width();
    let n = part.len();
    if window {
        for (j, p) in part.enumerate() {
            ring.decode_with::<L>(p % spec.residual, &mut tile[j * w..(j + 1) * w]);
        }
        return &tile[..n * w];
    }
    if let [rows] = &segs[..] {
        if let Some(direct) = rows.f32_rows(part.clone()) {
            return direct;
        }
        rows.decode_range::<L>(part, tile);
        return &tile[..n * w];
    }
    for (j, p) in part.enumerate() {
        let row = &mut tile[j * w..(j + 1) * w];
        for ((off, s), rows) in stream_spec.offsets().zip(segs) {
            rows.decode_with::<L>(p, &mut row[off..off + s.width]);
        }
    }
    &tile[..n * w]
}

/// The null position as a softmax state: score q·k0 (exact f32), weight 1, value v0.
fn null_partial(q: &[f32], k0: &[f32], v0: &[f32]) -> Partial {
    let dk = k0.len();
    let nq = q.len() / dk;
    Partial {
        m: q.chunks_exact(dk).map(|qr| Portable::dot(qr, k0)).collect(),
        l: vec![1.0; nq],
        acc: (0..nq).flat_map(|_| v0.iter().copied()).collect(),
        acc_rot: Vec::new(),
    }
}

/// Maximum of a slice (−∞ when empty), 8 lanes.
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    rest.iter()
        .chain(&m)
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

/// Sum of a slice, 8 lanes.
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut s = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            s[l] += c[l];
        }
    }
    s.iter().chain(rest).sum()
}

/// `e^x` for the softmax (x ≤ 0; −∞ and x < −87 give 0): Cephes' `expf` range reduction and
/// polynomial (≈ 1 ulp), branch-free so that it vectorizes.
#[inline(always)]
#[allow(clippy::excessive_precision)] // why: Cephes' constants, kept verbatim.
fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_375;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer.
    let xc = x.max(-87.0);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    let pow2 = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { y * pow2 }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn exp_fast_is_within_a_few_ulp_of_exp() {
        let seed: u64 = rand::rng().random();
        eprintln!("seed {seed}");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..100_000 {
            let x: f32 = rng.random_range(-87.0..0.0);
            let (got, want) = (exp_fast(x), x.exp());
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON * want,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_fast(0.0), 1.0);
        assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_fast(-1000.0), 0.0);
    }

    #[test]
    fn lane_helpers_match_plain_loops() {
        let seed: u64 = rand::rng().random();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for n in [1usize, 7, 8, 24, 40, 64, 130] {
            let x: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
            assert_eq!(max(&x), x.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            assert!((sum(&x) - x.iter().sum::<f32>()).abs() < 1e-4, "seed {seed}");
        }
    }
}
