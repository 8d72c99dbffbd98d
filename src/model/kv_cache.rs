//! A plain growable KV cache, one slot per attention layer.
//!
//! Storage is a preallocated (b, kv_heads, capacity, head_dim) buffer per K and V that doubles when
//! full (amortized O(1) appends, never an O(n²) chain of concatenations). Reads are views.

use candle_core::{DType, Result, Tensor};

use crate::cache::{CacheKind, QuantKvSpec, QuantKvStore};

/// Keys and values of one attention layer.
#[derive(Debug, Default, Clone)]
pub struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

impl LayerKv {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append k, v of shape (b, kv_heads, t, head_dim); returns the full cached (k, v) views.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let needed = self.len + t;
        self.k = Some(grow_and_write(self.k.take(), k, self.len, needed)?);
        self.v = Some(grow_and_write(self.v.take(), v, self.len, needed)?);
        self.len = needed;
        self.view()
    }

    /// The cached (k, v), each (b, kv_heads, len, head_dim).
    pub fn view(&self) -> Result<(Tensor, Tensor)> {
        match (&self.k, &self.v) {
            (Some(k), Some(v)) => Ok((k.narrow(2, 0, self.len)?, v.narrow(2, 0, self.len)?)),
            _ => candle_core::bail!("the KV cache is empty"),
        }
    }

    /// Drop everything after the first `len` positions.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            candle_core::bail!("cannot truncate a KV cache of {} positions to {len}", self.len);
        }
        self.len = len;
        Ok(())
    }

    /// Bytes held by the live part of the cache (capacity slack excluded).
    pub fn bytes(&self) -> usize {
        let per = |t: &Option<Tensor>| {
            t.as_ref().map_or(0, |t| {
                let (b, h, _, d) = t.dims4().unwrap_or((0, 0, 0, 0));
                b * h * self.len * d * t.dtype().size_in_bytes()
            })
        };
        per(&self.k) + per(&self.v)
    }
}

fn grow_and_write(buf: Option<Tensor>, new: &Tensor, at: usize, needed: usize) -> Result<Tensor> {
    let (b, h, t, d) = new.dims4()?;
    let buf = match buf {
        Some(buf) if buf.dim(2)? >= needed => buf,
        old => {
            let capacity = needed.next_power_of_two().max(64);
            let grown = Tensor::zeros((b, h, capacity, d), new.dtype(), new.device())?;
            if let Some(old) = old {
                if at > 0 {
                    grown.slice_set(&old.narrow(2, 0, at)?.contiguous()?, 2, 0)?;
                }
            }
            grown
        }
    };
    debug_assert_eq!(t + at, needed);
    buf.slice_set(&new.contiguous()?, 2, at)?;
    Ok(buf)
}

/// One [`LayerKv`] per attention slot of a model.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub layers: Vec<LayerKv>,
    /// Storage dtype of new entries (f32, f16 or bf16).
    pub dtype: DType,
    /// Per batch row, how many leading positions are left padding (attention never looks at
    /// them from a real token). Empty: no padding.
    pub left_pad: Vec<usize>,
    /// Quantized storage: when set, attention layers keep K/V in one [`QuantKvStore`] per slot
    /// (created on first use with the layer's shapes) and attend over the stored rows directly.
    pub quant: Option<QuantKinds>,
    /// With `quant`: the first this many slots store K/V as fp16 whatever `quant` says
    /// (`--fp16-prefix-layers`; early layers are the most sensitive to key error). Default: 0.
    pub fp16_prefix_slots: usize,
    stores: Vec<Option<QuantKvStore>>,
}

/// Storage kinds of a quantized cache (`--k-cache`, `--v-cache`, `--cache-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantKinds {
    pub k: CacheKind,
    pub v: CacheKind,
    /// DBA's geometric keys. Default: `k`.
    pub k_geo: Option<CacheKind>,
    /// Orthogonal (Hadamard) rotation of keys before quantization.
    pub rotate_k: bool,
    /// Subtract each head's mean key before quantizing (exact: attention adds it back); see
    /// [`crate::cache::QuantKvSpec::center_k`]. On unless `--no-center-k`.
    pub center_k: bool,
    /// Orthogonal (Hadamard) rotation of values before quantization (`--rotate-v`).
    pub rotate_v: bool,
}

impl QuantKinds {
    pub fn uniform(kind: CacheKind) -> Self {
        Self {
            k: kind,
            v: kind,
            k_geo: None,
            rotate_k: false,
            center_k: true,
            rotate_v: false,
        }
    }
}

impl KvCache {
    pub fn new(n_slots: usize, dtype: DType) -> Self {
        Self {
            layers: vec![LayerKv::default(); n_slots],
            dtype,
            left_pad: Vec::new(),
            quant: None,
            fp16_prefix_slots: 0,
            stores: (0..n_slots).map(|_| None).collect(),
        }
    }

    /// A cache whose K/V are stored as `kinds` (quantized kinds are read directly by attention).
    pub fn quantized(n_slots: usize, kinds: QuantKinds) -> Self {
        Self {
            quant: Some(kinds),
            ..Self::new(n_slots, DType::F32)
        }
    }

    /// The quantized store of `slot`, created by `spec` on first use.
    pub fn quant_store(
        &mut self,
        slot: usize,
        spec: impl FnOnce() -> QuantKvSpec,
    ) -> Result<&mut QuantKvStore> {
        if !self.left_pad.iter().all(|&p| p == 0) {
            candle_core::bail!("batched prompts with left padding cannot use a quantized KV cache yet");
        }
        let cell = self
            .stores
            .get_mut(slot)
            .ok_or_else(|| candle_core::Error::Msg(format!("no KV cache slot {slot}")))?;
        if cell.is_none() {
            let mut spec = spec();
            if slot < self.fp16_prefix_slots {
                for seg in spec.k.segments.iter_mut().chain(spec.v.segments.iter_mut()) {
                    seg.kind = CacheKind::Fp16;
                }
                spec.rotate_k = false;
                spec.rotate_v = false;
            }
            *cell = Some(QuantKvStore::new(spec).map_err(candle_core::Error::wrap)?);
        }
        Ok(cell.as_mut().expect("filled above"))
    }

    /// Additive (b, 1, 1, t, kt) mask for `t` new queries over `kt` keys that hides future keys and,
    /// from real (non-padding) queries, the padding keys; `None` when there is no padding.
    pub fn padding_mask(&self, t: usize, kt: usize, device: &candle_core::Device) -> Result<Option<Tensor>> {
        if self.left_pad.iter().all(|&p| p == 0) {
            return Ok(None);
        }
        let offset = kt - t;
        let b = self.left_pad.len();
        let mut mask = Vec::with_capacity(b * t * kt);
        for &pad in &self.left_pad {
            for i in 0..t {
                let q = offset + i;
                // why: a padding query keeps its own (causal) view so that no row is all -inf.
                mask.extend((0..kt).map(|j| {
                    if j > q || (q >= pad && j < pad) {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                }));
            }
        }
        Tensor::from_vec(mask, (b, 1, 1, t, kt), device).map(Some)
    }

    /// Cached length (all slots advance together).
    pub fn len(&self) -> usize {
        if self.quant.is_some() {
            return self
                .stores
                .first()
                .and_then(|s| s.as_ref())
                .map_or(0, |s| s.len());
        }
        self.layers.first().map_or(0, |l| l.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep the first `len` positions in every slot.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if self.quant.is_some() {
            if len > self.len() {
                candle_core::bail!("cannot truncate a KV cache of {} positions to {len}", self.len());
            }
            return self
                .stores
                .iter_mut()
                .flatten()
                .try_for_each(|s| s.truncate(len).map_err(candle_core::Error::wrap));
        }
        self.layers.iter_mut().try_for_each(|l| l.truncate(len))
    }

    /// Keep at most `len` positions in every slot; slots already shorter are left as they are.
    /// Speculative decoding needs it: a self-draft advances only the slots of its first layers.
    pub fn truncate_each(&mut self, len: usize) -> Result<()> {
        for l in self.layers.iter_mut().filter(|l| l.len() > len) {
            l.truncate(len)?;
        }
        self.stores
            .iter_mut()
            .flatten()
            .filter(|s| s.len() > len)
            .try_for_each(|s| s.truncate(len).map_err(candle_core::Error::wrap))
    }

    /// Drop every entry (and the padding).
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = LayerKv::default());
        self.stores.iter_mut().for_each(|s| *s = None);
        self.left_pad.clear();
    }

    /// Bytes of live entries (quantized: data and scales).
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.bytes()).sum::<usize>()
            + self.stores.iter().flatten().map(|s| s.bytes()).sum::<usize>()
    }
}
