//! `LayerCache`: the cache of one slot: an attention layer's K/V, either plain ([`PlainKv`],
//! f32/f16/bf16 tensors read as views) or quantized ([`QuantKvStore`], host rows read by
//! [`QuantKvStore::attend`]), or a recurrent layer's state ([`RecurrentState`]). All answer the
//! same `len` / `truncate` / `reset` / `bytes`, so the model's cache, the generator and
//! speculative decoding roll back every kind the same way.
//!
//! Shapes: `append` takes k (b, n_kv, t, dk) and v (b, n_kv, t, dv).

use candle_core::{Result, Tensor};

use super::plain::PlainKv;
use super::recurrent::RecurrentState;
use super::store::QuantKvStore;

/// One attention slot's keys and values.
#[derive(Debug, Clone)]
pub enum LayerCache {
    Plain(PlainKv),
    Quant(QuantKvStore),
    /// An SSM's convolution window and scan state (no K/V).
    Recurrent(RecurrentState),
}

impl LayerCache {
    /// Cached positions.
    pub fn len(&self) -> usize {
        match self {
            Self::Plain(kv) => kv.len(),
            Self::Quant(store) => store.len(),
            Self::Recurrent(state) => state.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append k, v at positions `[len, len + t)` (plain: in the tensors' dtype as given).
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        match self {
            Self::Plain(kv) => kv.append(k, v).map(|_| ()),
            Self::Quant(store) => store.append(k, v),
            Self::Recurrent(_) => candle_core::bail!("a recurrent layer's cache slot holds no K/V"),
        }
    }

    /// Keep the first `len` positions; errors (changing nothing) when `len` exceeds the length.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        match self {
            Self::Plain(kv) => kv.truncate(len),
            Self::Quant(store) => store.truncate(len).map_err(Into::into),
            Self::Recurrent(state) => state.truncate(len),
        }
    }

    /// Drop every position.
    pub fn reset(&mut self) {
        match self {
            Self::Plain(kv) => *kv = PlainKv::default(),
            Self::Quant(store) => store.reset(),
            Self::Recurrent(state) => state.reset(),
        }
    }

    /// Exact live bytes (capacity slack excluded; quantized: data, scales and the fp16 window).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Plain(kv) => kv.bytes(),
            Self::Quant(store) => store.bytes(),
            Self::Recurrent(state) => state.bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::cache::{CacheKind, QuantKvSpec};

    #[test]
    fn plain_and_quantized_slots_append_truncate_and_reset_alike() {
        let dev = Device::Cpu;
        let spec = QuantKvSpec::uniform(1, 2, 16, CacheKind::Fp16, CacheKind::Nf4);
        let slots = [
            LayerCache::Plain(PlainKv::default()),
            LayerCache::Quant(QuantKvStore::new(spec).unwrap()),
        ];
        for mut slot in slots {
            let k = Tensor::randn(0f32, 1.0, (1, 2, 5, 16), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (1, 2, 5, 16), &dev).unwrap();
            slot.append(&k, &v).unwrap();
            assert_eq!(slot.len(), 5);
            assert!(slot.bytes() > 0);
            let err = slot.truncate(6).unwrap_err().to_string();
            assert!(
                err.contains("cannot truncate a KV cache of 5 positions to 6"),
                "{err}"
            );
            assert_eq!(slot.len(), 5);
            slot.truncate(2).unwrap();
            assert_eq!(slot.len(), 2);
            slot.reset();
            assert_eq!((slot.len(), slot.bytes()), (0, 0));
        }
    }
}
