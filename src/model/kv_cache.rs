//! `KvCache`: a model's KV cache, one [`LayerCache`] per cache slot (an attention layer's K/V,
//! plain or quantized, or a recurrent layer's state; created by the slot's layer on first use),
//! plus the batch's left padding. Every slot advances, truncates and resets through the one
//! [`LayerCache`] API.

use candle_core::{DType, Result, Tensor};

use crate::cache::{CacheKind, LayerCache, PlainKv, QuantKvSpec, QuantKvStore, RecurrentState};

/// One [`LayerCache`] per cache slot of a model (attention and recurrent layers).
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Storage dtype of new plain entries (f32, f16 or bf16).
    pub dtype: DType,
    /// Per batch row, how many leading positions are left padding (attention never looks at
    /// them from a real token). Empty: no padding.
    pub left_pad: Vec<usize>,
    /// Quantized storage: when set, attention layers keep K/V in one [`QuantKvStore`] per slot
    /// (created on first use with the layer's shapes) and attend over the stored rows directly;
    /// otherwise each slot is a [`PlainKv`].
    pub quant: Option<QuantKinds>,
    /// With `quant`: the first this many slots store K/V as fp16 whatever `quant` says
    /// (`--fp16-prefix-layers`; early layers are the most sensitive to key error). Default: 0.
    pub fp16_prefix_slots: usize,
    /// One per cache slot; `None` until the slot's layer first writes.
    slots: Vec<Option<LayerCache>>,
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
            dtype,
            left_pad: Vec::new(),
            quant: None,
            fp16_prefix_slots: 0,
            slots: (0..n_slots).map(|_| None).collect(),
        }
    }

    /// A cache whose K/V are stored as `kinds` (quantized kinds are read directly by attention).
    pub fn quantized(n_slots: usize, kinds: QuantKinds) -> Self {
        Self {
            quant: Some(kinds),
            ..Self::new(n_slots, DType::F32)
        }
    }

    /// The slot cell, or an error naming the slot.
    fn cell(&mut self, slot: usize) -> Result<&mut Option<LayerCache>> {
        self.slots
            .get_mut(slot)
            .ok_or_else(|| candle_core::Error::Msg(format!("no KV cache slot {slot}")))
    }

    /// The plain K/V of `slot`, created empty on first use.
    pub fn plain_slot(&mut self, slot: usize) -> Result<&mut PlainKv> {
        match self
            .cell(slot)?
            .get_or_insert_with(|| LayerCache::Plain(PlainKv::default()))
        {
            LayerCache::Plain(kv) => Ok(kv),
            LayerCache::Quant(_) => candle_core::bail!("KV cache slot {slot} holds quantized storage"),
            LayerCache::Recurrent(_) => candle_core::bail!("cache slot {slot} holds a recurrent state"),
        }
    }

    /// The recurrent state of `slot` (an SSM layer's), created empty on first use; plain and
    /// quantized caches alike hold it (it is not K/V).
    pub fn recurrent_slot(&mut self, slot: usize) -> Result<&mut RecurrentState> {
        match self
            .cell(slot)?
            .get_or_insert_with(|| LayerCache::Recurrent(RecurrentState::default()))
        {
            LayerCache::Recurrent(state) => Ok(state),
            LayerCache::Plain(_) | LayerCache::Quant(_) => {
                candle_core::bail!("cache slot {slot} holds K/V, not a recurrent state")
            }
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
        let fp16_prefix = slot < self.fp16_prefix_slots;
        let cell = self.cell(slot)?;
        if cell.is_none() {
            let mut spec = spec();
            if fp16_prefix {
                for seg in spec.k.segments.iter_mut().chain(spec.v.segments.iter_mut()) {
                    seg.kind = CacheKind::Fp16;
                }
                spec.rotate_k = false;
                spec.rotate_v = false;
            }
            *cell = Some(LayerCache::Quant(
                QuantKvStore::new(spec).map_err(candle_core::Error::wrap)?,
            ));
        }
        match cell.as_mut().expect("filled above") {
            LayerCache::Quant(store) => Ok(store),
            LayerCache::Plain(_) => candle_core::bail!("KV cache slot {slot} holds plain storage"),
            LayerCache::Recurrent(_) => candle_core::bail!("cache slot {slot} holds a recurrent state"),
        }
    }

    /// The storage of `slot` (`None` before its layer first appended).
    pub fn slot(&self, slot: usize) -> Option<&LayerCache> {
        self.slots.get(slot).and_then(Option::as_ref)
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

    /// Cached length (all slots advance together; the first slot's).
    pub fn len(&self) -> usize {
        self.slot(0).map_or(0, LayerCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep the first `len` positions in every slot; errors (changing nothing) when `len` exceeds
    /// any slot's length.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        let lens = self.slots.iter().map(|s| s.as_ref().map_or(0, LayerCache::len));
        if let Some(short) = lens.filter(|&l| l < len).min() {
            return Err(crate::cache::CacheError::TruncateBeyondLen {
                requested: len,
                len: short,
            }
            .into());
        }
        self.slots.iter_mut().flatten().try_for_each(|s| s.truncate(len))
    }

    /// Keep at most `len` positions in every slot; slots already shorter are left as they are.
    /// Speculative decoding needs it (a self-draft advances only the slots of its first layers),
    /// and so does rolling back a forward that failed half-way.
    pub fn truncate_each(&mut self, len: usize) -> Result<()> {
        self.slots
            .iter_mut()
            .flatten()
            .filter(|s| s.len() > len)
            .try_for_each(|s| s.truncate(len))
    }

    /// Drop every entry (and the padding).
    pub fn reset(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.left_pad.clear();
    }

    /// Bytes of live entries (quantized: data and scales).
    pub fn bytes(&self) -> usize {
        self.slots.iter().flatten().map(LayerCache::bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn slots_advance_truncate_and_reset_together() {
        let dev = Device::Cpu;
        let mut cache = KvCache::quantized(2, QuantKinds::uniform(CacheKind::Q8_0));
        for slot in 0..2 {
            let k = Tensor::randn(0f32, 1.0, (1, 2, 5, 16), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (1, 2, 5, 16), &dev).unwrap();
            cache
                .quant_store(slot, || {
                    QuantKvSpec::uniform(1, 2, 16, CacheKind::Q8_0, CacheKind::Q4_0)
                })
                .unwrap()
                .append(&k, &v)
                .unwrap();
        }
        assert_eq!(cache.len(), 5);
        assert!(cache.plain_slot(0).is_err(), "a quantized slot is not plain");
        let err = cache.truncate(6).unwrap_err().to_string();
        assert!(
            err.contains("cannot truncate a KV cache of 5 positions to 6"),
            "{err}"
        );
        cache.truncate(2).unwrap();
        assert!((0..2).all(|i| cache.slot(i).unwrap().len() == 2));
        cache.truncate_each(1).unwrap();
        assert_eq!(cache.len(), 1);
        cache.reset();
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }
}
