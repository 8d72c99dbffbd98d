//! KV cache options of `generate`, `chat` and `bench perplexity` (`--cache-kind`, `--k-cache`,
//! `--v-cache`, rotations, `--fp16-prefix-layers` and the `auto` policy's budget and gates),
//! resolved once into a [`CacheConfig`].

use crate::cache::{CacheError, CacheKind};
use crate::infer::cache_policy::Gates;
use crate::infer::{AutoCache, CacheConfig};
use crate::model::QuantKinds;

/// `--cache-kind` values: a storage kind or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKindArg {
    Auto,
    Kind(CacheKind),
}

impl std::str::FromStr for CacheKindArg {
    type Err = CacheError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            Ok(Self::Auto)
        } else {
            s.parse().map(Self::Kind)
        }
    }
}

/// KV cache storage options of `generate`, `chat` and `bench perplexity`.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// KV cache storage for K and V: fp32, fp16, bf16, q8_0, q4_0, nf4, or `auto` (measured: see
    /// docs/inference.md). Default: the plain f32 cache.
    #[arg(long)]
    pub cache_kind: Option<CacheKindArg>,
    /// Storage of keys only (overrides --cache-kind for K).
    #[arg(long)]
    pub k_cache: Option<CacheKind>,
    /// Storage of values only (overrides --cache-kind for V).
    #[arg(long)]
    pub v_cache: Option<CacheKind>,
    /// Rotate keys by an orthogonal Hadamard transform before quantizing (undone on the query side).
    #[arg(long)]
    pub rotate_k: bool,
    /// Store quantized keys as they are, without subtracting each head's mean key first.
    #[arg(long)]
    pub no_center_k: bool,
    /// Rotate values by an orthogonal Hadamard transform before quantizing (undone after the
    /// weighted sum).
    #[arg(long)]
    pub rotate_v: bool,
    /// Keep the K/V of the first N attention layers in fp16 whatever the storage kind.
    #[arg(long, default_value_t = 0)]
    pub fp16_prefix_layers: usize,
    #[command(flatten)]
    pub auto: AutoCacheArgs,
}

/// Options of `--cache-kind auto`.
#[derive(Debug, Clone, clap::Args)]
pub struct AutoCacheArgs {
    /// With `--cache-kind auto`: most megabytes (10⁶ bytes) the KV cache may take at the model's
    /// full context.
    #[arg(long)]
    pub kv_budget_mb: Option<f64>,
    /// With `--cache-kind auto`: largest mean nll increase over fp16 on the probe (nats).
    #[arg(long, default_value_t = Gates::default().max_delta_nll)]
    pub max_delta_nll: f64,
    /// With `--cache-kind auto`: largest perplexity ratio over fp16.
    #[arg(long, default_value_t = Gates::default().max_ppl_ratio)]
    pub max_ppl_ratio: f64,
    /// With `--cache-kind auto`: largest mean KL(fp16 ‖ candidate) (nats).
    #[arg(long, default_value_t = Gates::default().max_mean_kl)]
    pub max_mean_kl: f64,
    /// With `--cache-kind auto`: also time decode steps per passing candidate.
    #[arg(long)]
    pub cache_speed_probe: bool,
    /// With `--cache-kind auto`: print every candidate's bytes, gate values and speed (stderr).
    #[arg(long)]
    pub explain: bool,
}

impl CacheArgs {
    /// The cache these flags describe: plain when no storage flag is given; with `auto`, the
    /// policy's question (answered after the model is loaded).
    pub fn resolve(&self) -> CacheConfig {
        let quantized = self.cache_kind.is_some()
            || self.k_cache.is_some()
            || self.v_cache.is_some()
            || self.rotate_k
            || self.rotate_v;
        let base = match self.cache_kind {
            Some(CacheKindArg::Kind(k)) => k,
            _ => CacheKind::Fp16,
        };
        let a = &self.auto;
        CacheConfig {
            kinds: quantized.then(|| QuantKinds {
                k: self.k_cache.unwrap_or(base),
                v: self.v_cache.unwrap_or(base),
                k_geo: None,
                rotate_k: self.rotate_k,
                center_k: !self.no_center_k,
                rotate_v: self.rotate_v,
            }),
            fp16_prefix_slots: self.fp16_prefix_layers,
            auto: (self.cache_kind == Some(CacheKindArg::Auto)).then(|| AutoCache {
                budget_bytes: a.kv_budget_mb.map(|mb| (mb * 1e6) as u64),
                gates: Gates {
                    max_delta_nll: a.max_delta_nll,
                    max_ppl_ratio: a.max_ppl_ratio,
                    max_mean_kl: a.max_mean_kl,
                },
                speed_probe: a.cache_speed_probe,
                explain: a.explain,
            }),
        }
    }
}

/// Answer `--cache-kind auto` for `loaded` (a config without it passes through).
pub fn resolve_auto(
    cfg: &CacheConfig,
    loaded: &crate::loader::LoadedModel,
) -> Result<CacheConfig, super::CliError> {
    crate::infer::cache_policy::resolve(cfg, loaded).map_err(|e| {
        if e.is_usage() {
            super::CliError::usage(e)
        } else {
            super::CliError::failed(e)
        }
    })
}
