//! `CacheConfig`: which KV cache a generation or perplexity run uses, as resolved from the
//! command line (`--cache-kind`, `--k-cache`, `--v-cache`, `--rotate-k`, … in `cli::cache`).
//! `--cache-kind auto` leaves [`CacheConfig::auto`] set until [`super::cache_policy::resolve`]
//! replaces it by the measured choice.

use candle_core::DType;

use super::cache_policy::Gates;
use crate::model::{KvCache, LanguageModel, QuantKinds};

/// The KV cache of a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CacheConfig {
    /// Storage kinds of a quantized cache; `None`: the plain cache. Default: none.
    pub kinds: Option<QuantKinds>,
    /// With `kinds`: the first this many slots store K/V as fp16 (`--fp16-prefix-layers`).
    /// Default: 0.
    pub fp16_prefix_slots: usize,
    /// `--cache-kind auto`: `kinds` is to be chosen by measurement first. Default: none.
    pub auto: Option<AutoCache>,
}

/// What `--cache-kind auto` is asked (see [`super::cache_policy::choose`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoCache {
    /// Most bytes the cache may take at the model's full context. Default: no budget.
    pub budget_bytes: Option<u64>,
    pub gates: Gates,
    /// Also time decode steps per passing candidate. Default: false.
    pub speed_probe: bool,
    /// Print every candidate's bytes, gate values and speed on stderr. Default: false.
    pub explain: bool,
}

impl CacheConfig {
    /// The quantized cache this config describes (`None`: the plain cache).
    pub fn cache_for(&self, model: &LanguageModel) -> Option<KvCache> {
        self.kinds.map(|k| {
            let mut cache = KvCache::quantized(model.n_slots(), k);
            cache.fp16_prefix_slots = self.fp16_prefix_slots;
            cache
        })
    }

    /// The cache this config describes, or the plain f32 one.
    pub fn cache_or_plain(&self, model: &LanguageModel) -> KvCache {
        self.cache_for(model)
            .unwrap_or_else(|| KvCache::new(model.n_slots(), DType::F32))
    }

    /// How reports name the cache: `k=q4_0 v=q4_0 center_k`, or `none (full forward)`.
    pub fn label(&self) -> String {
        self.kinds
            .map(|k| {
                let rot = match (k.rotate_k, k.rotate_v) {
                    (true, true) => " rotate_k rotate_v",
                    (true, false) => " rotate_k",
                    (false, true) => " rotate_v",
                    (false, false) => "",
                };
                let center = if k.center_k { " center_k" } else { "" };
                format!("k={} v={}{rot}{center}", k.k, k.v)
            })
            .unwrap_or_else(|| "none (full forward)".into())
    }
}
