//! `QuantKvStore`: the K/V rows of one attention layer in chosen storage kinds.
//!
//! Shapes: appends take k (b, n_kv, t, dk) and v (b, n_kv, t, dv) from any device and dtype; the
//! rows live in host memory, one [`Rows`] per (batch, KV head, segment). K may be split into
//! segments of their own kind (DBA stores `[k_sem ‖ k_geo]` per head: e.g. k_sem q4_0 + k_geo
//! q8_0); V has its own width and segments. Blocks never straddle heads or segments.
//!
//! Options: a Hadamard rotation of K before quantization ([`super::rotate`]; undone in
//! [`QuantKvStore::dequantize_all`] and by rotating the query in [`QuantKvStore::attend`]) and an
//! fp16 **residual window**: the most recent `residual` positions are also kept as fp16 and served
//! from there (exactly what fp16 storage would give). Every position is quantized on arrival, so a
//! truncate keeps the window positions that survive; positions before it are served quantized.

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::CacheError;
use super::kind::CacheKind;
use super::rotate::hadamard_in_place;
use super::rows::Rows;

/// `width` consecutive values of every head vector, stored as `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub width: usize,
    pub kind: CacheKind,
}

/// How one stream (K or V) of a layer is stored: its segments, in order, whose widths sum to the
/// stream's head dim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    pub segments: Vec<Segment>,
}

impl StreamSpec {
    /// One segment covering the whole head.
    pub fn uniform(head_dim: usize, kind: CacheKind) -> Self {
        Self {
            segments: vec![Segment {
                width: head_dim,
                kind,
            }],
        }
    }

    /// Several segments, e.g. `[(sem_hd, Q4_0), (geo_hd, Q8_0)]` for DBA's `[k_sem ‖ k_geo]`.
    pub fn segmented(segments: &[(usize, CacheKind)]) -> Self {
        Self {
            segments: segments
                .iter()
                .map(|&(width, kind)| Segment { width, kind })
                .collect(),
        }
    }

    /// Head dim of the stream (sum of the segment widths).
    pub fn width(&self) -> usize {
        self.segments.iter().map(|s| s.width).sum()
    }

    /// Exact bytes of one head vector, scales included.
    pub fn row_bytes(&self) -> usize {
        self.segments.iter().map(|s| s.kind.row_bytes(s.width)).sum()
    }

    /// Column offset of every segment.
    pub(crate) fn offsets(&self) -> impl Iterator<Item = (usize, &Segment)> {
        self.segments.iter().scan(0, |off, s| {
            let at = *off;
            *off += s.width;
            Some((at, s))
        })
    }
}

/// Everything that fixes a layer's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantKvSpec {
    /// Batch size b.
    pub batch: usize,
    /// KV heads n_kv.
    pub n_kv_heads: usize,
    /// K storage (width dk).
    pub k: StreamSpec,
    /// V storage (width dv).
    pub v: StreamSpec,
    /// Most recent positions also kept in fp16 and served exactly. Default: 0 (none).
    #[serde(default)]
    pub residual: usize,
    /// Hadamard-rotate each K segment before storing it (the query is rotated at attention time).
    /// Default: false.
    #[serde(default)]
    pub rotate_k: bool,
    /// Subtract each head's mean key (over the first rows appended, usually the prompt) before
    /// rotating and quantizing; attention adds `q·mean` back to the scores of stored rows, so
    /// scores are unchanged in exact arithmetic. Keys share a large per-channel offset that the
    /// 4-bit grid otherwise spends its range on. Default: false.
    #[serde(default)]
    pub center_k: bool,
    /// Hadamard-rotate each V segment before storing it; attention rotates its weighted sum of
    /// stored values back (the rotation is linear). Default: false.
    #[serde(default)]
    pub rotate_v: bool,
}

impl QuantKvSpec {
    /// The standard / GQA layout: K and V heads of `head_dim`, one kind each.
    pub fn uniform(batch: usize, n_kv_heads: usize, head_dim: usize, k: CacheKind, v: CacheKind) -> Self {
        Self {
            batch,
            n_kv_heads,
            k: StreamSpec::uniform(head_dim, k),
            v: StreamSpec::uniform(head_dim, v),
            residual: 0,
            rotate_k: false,
            center_k: false,
            rotate_v: false,
        }
    }

    /// Exact bytes one position occupies over all heads and the batch (fp16 window excluded).
    pub fn bytes_per_token(&self) -> usize {
        self.batch * self.n_kv_heads * (self.k.row_bytes() + self.v.row_bytes())
    }

    fn validate(&self) -> std::result::Result<(), CacheError> {
        let bad = |field, message: String| Err(CacheError::InvalidSpec { field, message });
        if self.batch == 0 {
            return bad("batch", "must be at least 1".into());
        }
        if self.n_kv_heads == 0 {
            return bad("n_kv_heads", "must be at least 1".into());
        }
        for (field, stream) in [("k.segments", &self.k), ("v.segments", &self.v)] {
            if stream.segments.is_empty() {
                return bad(field, "needs at least one segment".into());
            }
            if let Some(i) = stream.segments.iter().position(|s| s.width == 0) {
                return bad(field, format!("segment {i} has width 0"));
            }
        }
        Ok(())
    }
}

/// The rows of one (batch, KV head).
#[derive(Debug, Clone)]
pub(crate) struct HeadRows {
    /// One per K segment (rotated when `rotate_k`).
    pub k: Vec<Rows>,
    /// One per V segment.
    pub v: Vec<Rows>,
    /// fp16 ring of the last `residual` positions: position p in slot p % residual (unrotated).
    pub k_ring: Rows,
    pub v_ring: Rows,
    /// The mean key subtracted from stored K rows (`center_k`; empty until the first append).
    pub k_center: Vec<f32>,
}

/// Quantized (or plain) K/V storage of one attention layer; see the module doc.
#[derive(Debug, Clone)]
pub struct QuantKvStore {
    spec: QuantKvSpec,
    len: usize,
    /// Valid positions in the fp16 ring: `[len − ring_valid, len)`.
    ring_valid: usize,
    /// (b · n_kv) heads, batch-major.
    heads: Vec<HeadRows>,
}

impl QuantKvStore {
    /// An empty store; rejects zero sizes.
    pub fn new(mut spec: QuantKvSpec) -> std::result::Result<Self, CacheError> {
        spec.validate()?;
        // why: centering only changes what the quantizer sees; plain keys gain nothing from it.
        spec.center_k &= spec.k.segments.iter().any(|s| s.kind.is_quantized());
        spec.rotate_v &= spec.v.segments.iter().any(|s| s.kind.is_quantized());
        let head = HeadRows {
            k: spec
                .k
                .segments
                .iter()
                .map(|s| Rows::new(s.kind, s.width))
                .collect(),
            v: spec
                .v
                .segments
                .iter()
                .map(|s| Rows::new(s.kind, s.width))
                .collect(),
            k_ring: Rows::new(CacheKind::Fp16, spec.k.width()),
            v_ring: Rows::new(CacheKind::Fp16, spec.v.width()),
            k_center: Vec::new(),
        };
        Ok(Self {
            heads: vec![head; spec.batch * spec.n_kv_heads],
            spec,
            len: 0,
            ring_valid: 0,
        })
    }

    pub fn spec(&self) -> &QuantKvSpec {
        &self.spec
    }

    /// Cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions at the end that are served from the fp16 window: `[len − n, len)`.
    pub fn residual_len(&self) -> usize {
        self.ring_valid
    }

    pub(crate) fn heads(&self) -> &[HeadRows] {
        &self.heads
    }

    /// Preallocate room for `additional` more positions (e.g. the generation budget).
    pub fn reserve(&mut self, additional: usize) {
        for head in &mut self.heads {
            head.k
                .iter_mut()
                .chain(head.v.iter_mut())
                .for_each(|r| r.reserve(additional));
        }
    }

    /// Append k (b, n_kv, t, dk) and v (b, n_kv, t, dv) at positions `[len, len + t)`.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let (b, h) = (self.spec.batch, self.spec.n_kv_heads);
        let (dk, dv) = (self.spec.k.width(), self.spec.v.width());
        let t = k.dims().get(2).copied().unwrap_or(0);
        check_shape("k", k, &[b, h, t, dk])?;
        check_shape("v", v, &[b, h, t, dv])?;
        let kf = host_f32(k)?;
        let vf = host_f32(v)?;
        let (len, residual, rotate) = (self.len, self.spec.residual, self.spec.rotate_k);
        let (center, rotate_v) = (self.spec.center_k, self.spec.rotate_v);
        let (k_spec, v_spec) = (&self.spec.k, &self.spec.v);
        let fill = |(i, head): (usize, &mut HeadRows)| {
            if center && head.k_center.is_empty() && t > 0 {
                let mut mean = vec![0.0f32; dk];
                for row in kf[i * t * dk..(i + 1) * t * dk].chunks_exact(dk) {
                    mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
                }
                mean.iter_mut().for_each(|m| *m /= t as f32);
                head.k_center = mean;
            }
            let mut stored = vec![0.0f32; dk];
            let mut stored_v = vec![0.0f32; dv];
            let transform = rotate || !head.k_center.is_empty();
            for ti in 0..t {
                let krow = &kf[(i * t + ti) * dk..][..dk];
                let vrow = &vf[(i * t + ti) * dv..][..dv];
                let kq = if transform {
                    stored.copy_from_slice(krow);
                    stored.iter_mut().zip(&head.k_center).for_each(|(x, m)| *x -= m);
                    if rotate {
                        for (off, s) in k_spec.offsets() {
                            hadamard_in_place(&mut stored[off..off + s.width]);
                        }
                    }
                    &stored[..]
                } else {
                    krow
                };
                for ((off, s), rows) in k_spec.offsets().zip(head.k.iter_mut()) {
                    rows.push(&kq[off..off + s.width]);
                }
                let vq = if rotate_v {
                    stored_v.copy_from_slice(vrow);
                    for (off, s) in v_spec.offsets() {
                        hadamard_in_place(&mut stored_v[off..off + s.width]);
                    }
                    &stored_v[..]
                } else {
                    vrow
                };
                for ((off, s), rows) in v_spec.offsets().zip(head.v.iter_mut()) {
                    rows.push(&vq[off..off + s.width]);
                }
                if residual > 0 {
                    let slot = (len + ti) % residual;
                    for (ring, row) in [(&mut head.k_ring, krow), (&mut head.v_ring, vrow)] {
                        if slot < ring.len() {
                            ring.set(slot, row);
                        } else {
                            ring.push(row);
                        }
                    }
                }
            }
        };
        // why: per-head quantization is independent; only worth threads for a prefill.
        if t * (dk + dv) * self.heads.len() >= 1 << 16 {
            self.heads.par_iter_mut().enumerate().for_each(fill);
        } else {
            self.heads.iter_mut().enumerate().for_each(fill);
        }
        self.len += t;
        self.ring_valid = (self.ring_valid + t).min(residual);
        Ok(())
    }

    /// Keep the first `n` positions; errors when `n > len`.
    pub fn truncate(&mut self, n: usize) -> std::result::Result<(), CacheError> {
        if n > self.len {
            return Err(CacheError::TruncateBeyondLen {
                requested: n,
                len: self.len,
            });
        }
        for head in &mut self.heads {
            head.k
                .iter_mut()
                .chain(head.v.iter_mut())
                .for_each(|r| r.truncate(n));
        }
        if n == 0 {
            self.heads.iter_mut().for_each(|h| h.k_center.clear());
        }
        // The window kept [len − ring_valid, len); what survives is [len − ring_valid, n).
        self.ring_valid = (n + self.ring_valid).saturating_sub(self.len);
        self.len = n;
        Ok(())
    }

    /// Drop every position and free the memory.
    pub fn reset(&mut self) {
        for head in &mut self.heads {
            let rows = head.k.iter_mut().chain(head.v.iter_mut());
            rows.chain([&mut head.k_ring, &mut head.v_ring])
                .for_each(Rows::clear);
            head.k_center.clear();
        }
        self.len = 0;
        self.ring_valid = 0;
    }

    /// Exact live bytes: `len · spec.bytes_per_token()` plus the valid fp16 window
    /// (`residual_len · b · n_kv · 2 · (dk + dv)`). Growth slack is excluded.
    pub fn bytes(&self) -> usize {
        let rows: usize = self
            .heads
            .iter()
            .flat_map(|h| h.k.iter().chain(&h.v))
            .map(Rows::bytes)
            .sum();
        let window = self.heads.len() * self.ring_valid * 2 * (self.spec.k.width() + self.spec.v.width());
        rows + window
    }

    /// Bytes allocated, growth slack and the whole fp16 ring included.
    pub fn capacity_bytes(&self) -> usize {
        self.heads
            .iter()
            .flat_map(|h| h.k.iter().chain(&h.v).chain([&h.k_ring, &h.v_ring]))
            .map(Rows::capacity_bytes)
            .sum()
    }

    /// Position `p` of head `i`, decoded to f32 (window positions from the fp16 ring, K unrotated).
    fn decode_position(&self, head: &HeadRows, p: usize, k: &mut [f32], v: &mut [f32]) {
        if self.in_window(p) {
            head.k_ring.decode(p % self.spec.residual, k);
            head.v_ring.decode(p % self.spec.residual, v);
            return;
        }
        for ((off, s), rows) in self.spec.k.offsets().zip(&head.k) {
            let seg = &mut k[off..off + s.width];
            rows.decode(p, seg);
            if self.spec.rotate_k {
                hadamard_in_place(seg);
            }
        }
        k.iter_mut().zip(&head.k_center).for_each(|(x, m)| *x += m);
        for ((off, s), rows) in self.spec.v.offsets().zip(&head.v) {
            let seg = &mut v[off..off + s.width];
            rows.decode(p, seg);
            if self.spec.rotate_v {
                hadamard_in_place(seg);
            }
        }
    }

    /// True when position `p` is served from the fp16 window.
    pub(crate) fn in_window(&self, p: usize) -> bool {
        p + self.ring_valid >= self.len && p < self.len
    }

    /// The whole cache as f32 tensors k (b, n_kv, len, dk), v (b, n_kv, len, dv) on `device`: what
    /// attention over this cache sees (the reference path for [`QuantKvStore::attend`]).
    pub fn dequantize_all(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let (b, h, n) = (self.spec.batch, self.spec.n_kv_heads, self.len);
        let (dk, dv) = (self.spec.k.width(), self.spec.v.width());
        let mut kf = vec![0.0f32; b * h * n * dk];
        let mut vf = vec![0.0f32; b * h * n * dv];
        for (i, head) in self.heads.iter().enumerate() {
            for p in 0..n {
                let k = &mut kf[(i * n + p) * dk..][..dk];
                let v = &mut vf[(i * n + p) * dv..][..dv];
                self.decode_position(head, p, k, v);
            }
        }
        Ok((
            Tensor::from_vec(kf, (b, h, n, dk), device)?,
            Tensor::from_vec(vf, (b, h, n, dv), device)?,
        ))
    }
}

fn check_shape(what: &'static str, x: &Tensor, expected: &[usize]) -> Result<()> {
    if x.dims() != expected {
        return Err(CacheError::Shape {
            what,
            expected: format!("{expected:?}"),
            found: x.dims().to_vec(),
        }
        .into());
    }
    Ok(())
}

/// A tensor as a contiguous host f32 vector.
pub(crate) fn host_f32(x: &Tensor) -> Result<Vec<f32>> {
    x.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_errors_name_the_field() {
        let mut spec = QuantKvSpec::uniform(1, 2, 8, CacheKind::Q8_0, CacheKind::Q4_0);
        spec.v.segments[0].width = 0;
        let err = QuantKvStore::new(spec).unwrap_err();
        assert!(
            matches!(
                err,
                CacheError::InvalidSpec {
                    field: "v.segments",
                    ..
                }
            ),
            "{err}"
        );
        let spec = QuantKvSpec::uniform(0, 2, 8, CacheKind::Q8_0, CacheKind::Q4_0);
        assert!(QuantKvStore::new(spec).unwrap_err().to_string().contains("batch"));
    }

    #[test]
    fn append_rejects_mismatched_shapes() {
        let spec = QuantKvSpec::uniform(1, 2, 8, CacheKind::Q8_0, CacheKind::Q4_0);
        let mut store = QuantKvStore::new(spec).unwrap();
        let dev = Device::Cpu;
        let k = Tensor::randn(0f32, 1.0, (1, 2, 3, 8), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 2, 3, 9), &dev).unwrap();
        let err = store.append(&k, &v).unwrap_err().to_string();
        assert!(err.contains("v: expected shape [1, 2, 3, 8]"), "{err}");
        assert_eq!(store.len(), 0);
    }
}
