//! Grouped attention that reads the stored rows directly (no dequantized copy of the cache).
//!
//! For every (batch, KV head) and the `g · t` query rows of its group: scores `s_j = q · k_j` are
//! computed block by block as `scale × Σ q_i · code_i` (codes decoded to f32 in a 32-value
//! scratch), an online softmax in f32 runs over chunks of positions (a per-chunk score buffer, never
//! the full score matrix), and `Σ p_j v_j` is accumulated with per-block scales. Long caches are
//! split along positions into independent pieces (rayon) whose softmax states are merged with the
//! log-sum-exp rule (flash-decoding). The optional null key/value is one more, always visible,
//! exact f32 position.
//!
//! Shapes: q (b, n_heads, t, dk), pre-scaled by the caller (as [`crate::layer::sdpa`]); the store
//! holds n_kv heads; query head h uses KV head h / (n_heads / n_kv). Output (b, n_heads, t, dv) in
//! q's dtype and on q's device. With `causal`, query i of t sits at position `len − t + i`.
//! Reference: `grouped_attention` on [`QuantKvStore::dequantize_all`].

use std::ops::Range;

use candle_core::{Result, Tensor};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::error::CacheError;
use super::kind::{CacheKind, blocks};
use super::quant::{self, nibble_bytes};
use super::rotate::hadamard_in_place;
use super::rows::{Rows, RowsView};
use super::store::{HeadRows, QuantKvStore, host_f32};
use crate::layer::sdpa::NullKv;

/// Positions per online-softmax chunk (the score buffer is `g · t × CHUNK`).
const CHUNK: usize = 64;
/// Smallest piece of positions worth a rayon task.
const MIN_SPLIT: usize = 256;

/// Options of [`QuantKvStore::attend`].
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Mask positions after each query's own (only matters for t > 1). Default: true.
    pub causal: bool,
    /// Split the work over rayon's pool. Default: true.
    pub parallel: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            causal: true,
            parallel: true,
        }
    }
}

/// The softmax state of some query rows over some positions: running max, normalizer, Σ p·v.
struct Partial {
    m: Vec<f32>,
    l: Vec<f32>,
    acc: Vec<f32>,
}

impl Partial {
    fn empty(nq: usize, dv: usize) -> Self {
        Self {
            m: vec![f32::NEG_INFINITY; nq],
            l: vec![0.0; nq],
            acc: vec![0.0; nq * dv],
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
            self.m[i] = m;
        }
    }
}

/// What one (batch, KV head) needs: its rows and its query rows (plain and, for rotated K, rotated).
struct HeadJob<'a> {
    head: &'a HeadRows,
    q: Vec<f32>,
    q_rot: Option<Vec<f32>>,
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
                HeadJob {
                    head: &self.heads()[i],
                    q: rows,
                    q_rot,
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
        let run =
            |(j, range): &(usize, Range<usize>)| self.attend_piece(&jobs[*j], range.clone(), t, opts.causal);
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
                    null_partial(&job.q, &nk[(j % n_kv) * dk..][..dk], &nv[(j % n_kv) * dv..][..dv])
                }
                None => Partial::empty(nq, dv),
            };
            while let Some(((_, _), p)) = parts.next_if(|((tj, _), _)| *tj == j) {
                state.merge(p);
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

    /// The softmax state of one job's query rows over positions `range`.
    fn attend_piece(&self, job: &HeadJob, range: Range<usize>, t: usize, causal: bool) -> Partial {
        let spec = self.spec();
        let (dk, dv, len) = (spec.k.width(), spec.v.width(), self.len());
        let nq = job.q.len() / dk;
        let mut state = Partial::empty(nq, dv);
        let mut scores = vec![0.0f32; nq * CHUNK];
        let window_start = len - self.residual_len();
        let q_stored = job.q_rot.as_deref().unwrap_or(&job.q);
        for c in range.clone().step_by(CHUNK) {
            let chunk = c..(c + CHUNK).min(range.end);
            let n = chunk.len();
            scores.fill(0.0);
            let stored = chunk.start..chunk.end.min(window_start);
            if !stored.is_empty() {
                for ((off, _), rows) in spec.k.offsets().zip(&job.head.k) {
                    add_scores(rows, stored.clone(), q_stored, dk, off, &mut scores, 0);
                }
            }
            for (slots, col) in window_runs(chunk.clone(), window_start, spec.residual) {
                add_scores(&job.head.k_ring, slots, &job.q, dk, 0, &mut scores, col);
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
                let m_new = row.iter().copied().fold(state.m[r], f32::max);
                if m_new == f32::NEG_INFINITY {
                    row.fill(0.0);
                    continue;
                }
                let corr = (state.m[r] - m_new).exp();
                let mut sum = 0.0;
                for s in row.iter_mut() {
                    *s = (*s - m_new).exp();
                    sum += *s;
                }
                state.l[r] = state.l[r] * corr + sum;
                if corr != 1.0 {
                    state.acc[r * dv..][..dv].iter_mut().for_each(|a| *a *= corr);
                }
                state.m[r] = m_new;
            }
            if !stored.is_empty() {
                for ((off, _), rows) in spec.v.offsets().zip(&job.head.v) {
                    add_values(rows, stored.clone(), &scores, &mut state.acc, dv, off, 0);
                }
            }
            for (slots, col) in window_runs(chunk.clone(), window_start, spec.residual) {
                add_values(&job.head.v_ring, slots, &scores, &mut state.acc, dv, 0, col);
            }
        }
        state
    }
}

/// The window positions of `chunk` as runs of ring slots, each with its column in the chunk.
fn window_runs(chunk: Range<usize>, window_start: usize, residual: usize) -> Vec<(Range<usize>, usize)> {
    let mut runs = Vec::new();
    let mut p = chunk.start.max(window_start);
    while p < chunk.end {
        let slot = p % residual;
        let n = (residual - slot).min(chunk.end - p);
        runs.push((slot..slot + n, p - chunk.start));
        p += n;
    }
    runs
}

/// The null position as a softmax state: score q·k0 (exact f32), weight 1, value v0.
fn null_partial(q: &[f32], k0: &[f32], v0: &[f32]) -> Partial {
    let dk = k0.len();
    let nq = q.len() / dk;
    Partial {
        m: q.chunks_exact(dk).map(|qr| dot(qr, k0)).collect(),
        l: vec![1.0; nq],
        acc: (0..nq).flat_map(|_| v0.iter().copied()).collect(),
    }
}

/// `scores[r·CHUNK + col0 + j] += q_r[off..off + w] · row_{rows.start + j}` for every query row r.
fn add_scores(
    rows: &Rows,
    range: Range<usize>,
    q: &[f32],
    dq: usize,
    off: usize,
    scores: &mut [f32],
    col0: usize,
) {
    let w = rows.width();
    let nq = q.len() / dq;
    let per_row = |j: usize, codes: &[f32], scales: &[f32], bounds: &[(usize, usize)]| {
        for r in 0..nq {
            let qr = &q[r * dq + off..][..w];
            let mut s = 0.0;
            for (&(start, n), &d) in bounds.iter().zip(scales) {
                s += d * dot(&qr[start..start + n], &codes[start..start + n]);
            }
            scores[r * CHUNK + col0 + j] += s;
        }
    };
    for_each_decoded(rows, range, per_row);
}

/// `acc[r·dv + off..][..w] += p[r·CHUNK + col0 + j] · row_{rows.start + j}` for every query row r.
fn add_values(
    rows: &Rows,
    range: Range<usize>,
    p: &[f32],
    acc: &mut [f32],
    dv: usize,
    off: usize,
    col0: usize,
) {
    let w = rows.width();
    let nq = acc.len() / dv;
    let per_row = |j: usize, codes: &[f32], scales: &[f32], bounds: &[(usize, usize)]| {
        for r in 0..nq {
            let pr = p[r * CHUNK + col0 + j];
            if pr == 0.0 {
                continue;
            }
            let ar = &mut acc[r * dv + off..][..w];
            for (&(start, n), &d) in bounds.iter().zip(scales) {
                axpy(pr * d, &codes[start..start + n], &mut ar[start..start + n]);
            }
        }
    };
    for_each_decoded(rows, range, per_row);
}

/// Decode every row of `range` into unscaled f32 codes plus one scale per block and hand it to `f`
/// with the row's index in the range. Float kinds are one block of scale 1. Dispatches on the kind
/// once, so every kind gets its own monomorphized loop.
#[inline(always)]
fn for_each_decoded(
    rows: &Rows,
    range: Range<usize>,
    mut f: impl FnMut(usize, &[f32], &[f32], &[(usize, usize)]),
) {
    let w = rows.width();
    let mut codes = vec![0.0f32; w];
    match rows.view() {
        RowsView::F32(v) => {
            for (j, p) in range.enumerate() {
                f(j, &v[p * w..(p + 1) * w], &[1.0], &[(0, w)]);
            }
        }
        RowsView::F16(v) => {
            for (j, p) in range.enumerate() {
                v[p * w..(p + 1) * w].convert_to_f32_slice(&mut codes);
                f(j, &codes, &[1.0], &[(0, w)]);
            }
        }
        RowsView::Bf16(v) => {
            for (j, p) in range.enumerate() {
                v[p * w..(p + 1) * w].convert_to_f32_slice(&mut codes);
                f(j, &codes, &[1.0], &[(0, w)]);
            }
        }
        RowsView::Quant {
            kind,
            scales,
            codes: bytes,
        } => {
            let bounds: Vec<(usize, usize)> = blocks(w).collect();
            let nb = bounds.len();
            let cb = rows.code_bytes();
            let mut sc = vec![0.0f32; nb];
            let decode: fn(&[u8], &mut [f32]) = match kind {
                CacheKind::Q8_0 => quant::q8_0_codes,
                CacheKind::Q4_0 => quant::q4_0_codes,
                _ => quant::nf4_codes,
            };
            let q8 = kind == CacheKind::Q8_0;
            for (j, p) in range.enumerate() {
                let mut row = &bytes[p * cb..(p + 1) * cb];
                for &(start, n) in &bounds {
                    let used = if q8 { n } else { nibble_bytes(n) };
                    decode(&row[..used], &mut codes[start..start + n]);
                    row = &row[used..];
                }
                for (s, d) in sc.iter_mut().zip(&scales[p * nb..(p + 1) * nb]) {
                    *s = d.to_f32();
                }
                f(j, &codes, &sc, &bounds);
            }
        }
    }
}

/// Dot product with 8 independent accumulators (so the compiler vectorizes it).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `y += a · x`.
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}
