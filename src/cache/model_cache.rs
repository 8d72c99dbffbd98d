//! `QuantKvCache`: one [`QuantKvStore`] per attention slot of a model (the quantized counterpart
//! of `model::KvCache`); every slot advances, truncates and resets together.

use super::error::CacheError;
use super::store::{QuantKvSpec, QuantKvStore};

/// The stores of every attention slot, indexed like `model::KvCache::layers`.
#[derive(Debug, Clone)]
pub struct QuantKvCache {
    pub layers: Vec<QuantKvStore>,
}

impl QuantKvCache {
    /// One store per slot, in slot order (standard layers and DBA layers may mix).
    pub fn new(specs: impl IntoIterator<Item = QuantKvSpec>) -> Result<Self, CacheError> {
        let layers = specs
            .into_iter()
            .map(QuantKvStore::new)
            .collect::<Result<_, _>>()?;
        Ok(Self { layers })
    }

    /// Cached length (all slots advance together; the first slot's).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, QuantKvStore::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep the first `len` positions in every slot; errors (changing nothing) when `len` exceeds
    /// any slot's length.
    pub fn truncate(&mut self, len: usize) -> Result<(), CacheError> {
        if let Some(short) = self.layers.iter().find(|l| l.len() < len) {
            return Err(CacheError::TruncateBeyondLen {
                requested: len,
                len: short.len(),
            });
        }
        self.layers.iter_mut().try_for_each(|l| l.truncate(len))
    }

    /// Drop every position of every slot.
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(QuantKvStore::reset);
    }

    /// Exact live bytes over all slots ([`QuantKvStore::bytes`]).
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(QuantKvStore::bytes).sum()
    }

    /// Exact bytes one more position costs over all slots (fp16 window excluded).
    pub fn bytes_per_token(&self) -> usize {
        self.layers.iter().map(|l| l.spec().bytes_per_token()).sum()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::cache::{CacheKind, StreamSpec};

    #[test]
    fn slots_advance_truncate_and_reset_together() {
        let dba = QuantKvSpec {
            batch: 1,
            n_kv_heads: 2,
            k: StreamSpec::segmented(&[(8, CacheKind::Q4_0), (16, CacheKind::Q8_0)]),
            v: StreamSpec::uniform(12, CacheKind::Q4_0),
            residual: 0,
            rotate_k: false,
            center_k: false,
            rotate_v: false,
        };
        let plain = QuantKvSpec::uniform(1, 2, 16, CacheKind::Fp16, CacheKind::Nf4);
        let mut cache = QuantKvCache::new([plain.clone(), dba.clone()]).unwrap();
        assert_eq!(
            cache.bytes_per_token(),
            plain.bytes_per_token() + dba.bytes_per_token()
        );
        let dev = Device::Cpu;
        for (layer, (dk, dv)) in cache.layers.iter_mut().zip([(16, 16), (24, 12)]) {
            let k = Tensor::randn(0f32, 1.0, (1, 2, 5, dk), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (1, 2, 5, dv), &dev).unwrap();
            layer.append(&k, &v).unwrap();
        }
        assert_eq!(cache.len(), 5);
        assert_eq!(cache.bytes(), 5 * cache.bytes_per_token());
        assert_eq!(
            cache.truncate(6).unwrap_err(),
            CacheError::TruncateBeyondLen { requested: 6, len: 5 }
        );
        cache.truncate(2).unwrap();
        assert!(cache.layers.iter().all(|l| l.len() == 2));
        cache.reset();
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }
}
