//! `--cache-kind auto`: choose a KV cache storage for a model by measurement.
//!
//! Candidates (fp16, q8_0, q8_0 K + q4_0 V, q4_0 with rotated K, q4_0) → budget filter on the exact
//! bytes per token (scales included, measured on a real store) → quality gates against the fp16
//! cache on a short real-text probe (Δnll, perplexity ratio, mean KL(fp16 ‖ cand) over every probe
//! position, all through the cache) → an optional decode-speed probe → the smallest passing storage
//! (the fastest among equal sizes). The decision is kept as JSON under `$CARAMBA_CACHE/policy/`,
//! keyed by model, lengths, budget and gates, and probed again after `reprobe_secs`.
//!
//! Unlike the original, the probe is real text (it used random token ids, where every storage looks
//! alike) and the pick is the smallest passing storage (it took the first, i.e. fp16 whenever it fit).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::cache_quality::{CacheQuality, cache_of, compare_caches};
use crate::cache::CacheKind;
use crate::model::{ForwardCtx, KvCache, LanguageModel, QuantKinds};

/// The real-text probe (plain English prose and a little code), tokenized with the model's tokenizer.
pub const PROBE_TEXT: &str = "The history of the printing press begins in the fifteenth century, when \
Johannes Gutenberg combined movable metal type, oil-based ink and a wooden screw press. Books became \
cheaper, literacy spread, and scholars could compare identical copies of the same text for the first \
time. Within fifty years presses were running in more than two hundred European cities.\n\n\
def mean(values):\n    \"\"\"Return the arithmetic mean of a non-empty list.\"\"\"\n    total = 0\n    \
for v in values:\n        total += v\n    return total / len(values)\n\n\
Weather forecasts work by measuring the present state of the atmosphere and stepping a numerical \
model forward in time. Small errors in the measurements grow, which is why a forecast for tomorrow \
is far more reliable than one for next week.";

/// Quality thresholds (a candidate must meet all).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// Default: 0.02 nats.
    pub max_delta_nll: f64,
    /// Default: 1.02.
    pub max_ppl_ratio: f64,
    /// Default: 0.02 nats.
    pub max_mean_kl: f64,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            max_delta_nll: 0.02,
            max_ppl_ratio: 1.02,
            max_mean_kl: 0.02,
        }
    }
}

/// What the policy is asked.
#[derive(Debug, Clone)]
pub struct PolicyRequest {
    /// Identifies the model in the decision key (its path).
    pub model_id: String,
    /// Context the cache must hold (the budget is for this many positions).
    pub max_seq_len: usize,
    /// Most bytes the whole cache may take at `max_seq_len`. Default: none.
    pub budget_bytes: Option<u64>,
    pub gates: Gates,
    /// Time a few decode steps per passing candidate. Default: false.
    pub speed_probe: bool,
    /// Reuse a stored decision younger than this. Default: 3600 s.
    pub reprobe_secs: u64,
}

/// One candidate's measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Candidate {
    pub name: String,
    pub k: CacheKind,
    pub v: CacheKind,
    pub rotate_k: bool,
    /// Exact bytes per token over all layers (data and scales).
    pub bytes_per_token: u64,
    pub fits_budget: bool,
    pub quality: Option<CacheQuality>,
    pub passes_gates: bool,
    /// Decode steps per second after the probe (with `speed_probe`).
    pub decode_tokens_per_sec: Option<f64>,
}

impl Candidate {
    pub fn kinds(&self) -> QuantKinds {
        policy_kinds(self.k, self.v, self.rotate_k)
    }
}

/// The storage a policy candidate names: keys centered whenever quantized, and "rotated" meaning
/// both K and V (the form that was measured; docs/inference.md).
fn policy_kinds(k: CacheKind, v: CacheKind, rotated: bool) -> QuantKinds {
    QuantKinds {
        k,
        v,
        k_geo: None,
        rotate_k: rotated,
        center_k: true,
        rotate_v: rotated,
    }
}

/// The decision, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub chosen: String,
    pub k: CacheKind,
    pub v: CacheKind,
    pub rotate_k: bool,
    pub candidates: Vec<Candidate>,
    /// Seconds since the Unix epoch when it was measured.
    pub measured_at: u64,
    /// True when it was read back from the store rather than measured now.
    #[serde(default)]
    pub reused: bool,
}

impl Decision {
    pub fn kinds(&self) -> QuantKinds {
        policy_kinds(self.k, self.v, self.rotate_k)
    }

    /// The `--explain` table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<16} {:>10} {:>7} {:>10} {:>9} {:>9} {:>9} {:>6}\n",
            "candidate", "bytes/tok", "budget", "Δnll", "ppl×", "mean KL", "tok/s", "pass"
        );
        for c in &self.candidates {
            let q = c.quality;
            let f = |x: Option<f64>, p: usize| x.map_or("-".to_string(), |x| format!("{x:.p$}"));
            s += &format!(
                "{:<16} {:>10} {:>7} {:>10} {:>9} {:>9} {:>9} {:>6}{}\n",
                c.name,
                c.bytes_per_token,
                if c.fits_budget { "fits" } else { "over" },
                f(q.map(|q| q.delta_nll), 5),
                f(q.map(|q| q.ppl_ratio), 4),
                f(q.map(|q| q.mean_kl), 5),
                f(c.decode_tokens_per_sec, 1),
                if c.passes_gates { "yes" } else { "no" },
                if c.name == self.chosen { "  ← chosen" } else { "" }
            );
        }
        s
    }
}

fn candidates() -> Vec<(&'static str, QuantKinds)> {
    let kinds = policy_kinds;
    vec![
        ("fp16", kinds(CacheKind::Fp16, CacheKind::Fp16, false)),
        ("q8_0", kinds(CacheKind::Q8_0, CacheKind::Q8_0, false)),
        ("q8_0/q4_0", kinds(CacheKind::Q8_0, CacheKind::Q4_0, false)),
        ("q4_0+rot", kinds(CacheKind::Q4_0, CacheKind::Q4_0, true)),
        ("q4_0", kinds(CacheKind::Q4_0, CacheKind::Q4_0, false)),
    ]
}

/// Exact bytes one position costs in a cache of `kinds` (measured on a one-token store).
fn bytes_per_token(model: &LanguageModel, kinds: QuantKinds, device: &Device) -> candle_core::Result<u64> {
    let mut cache = cache_of(model, kinds, 0);
    let ids = candle_core::Tensor::from_slice(&[1u32], (1, 1), device)?;
    model.forward_hidden(&ids, &mut ForwardCtx::cached(&mut cache, 0))?;
    Ok(cache.bytes() as u64)
}

fn key(req: &PolicyRequest, probe_len: usize) -> String {
    let payload = serde_json::json!({
        "version": 1, "model": req.model_id, "max_seq_len": req.max_seq_len, "probe_len": probe_len,
        "budget_bytes": req.budget_bytes, "gates": req.gates, "speed_probe": req.speed_probe,
    })
    .to_string();
    // why: FNV-1a is stable across runs and platforms (std's hasher is not).
    let h = payload.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Choose a storage for `model` (see the module docs); `probe` are the token ids of
/// [`PROBE_TEXT`] (or any real text). `store` is the directory of stored decisions (`None`: do not
/// persist).
pub fn choose(
    model: &LanguageModel,
    probe: &[u32],
    device: &Device,
    req: &PolicyRequest,
    store: Option<&std::path::Path>,
) -> candle_core::Result<Decision> {
    let path = store.map(|d| d.join(format!("{}.json", key(req, probe.len()))));
    if let Some(p) = &path
        && let Ok(text) = std::fs::read_to_string(p)
        && let Ok(mut d) = serde_json::from_str::<Decision>(&text)
        && now().saturating_sub(d.measured_at) < req.reprobe_secs
    {
        d.reused = true;
        return Ok(d);
    }
    if probe.len() < 8 {
        candle_core::bail!(
            "the cache policy probe needs at least 8 tokens (got {})",
            probe.len()
        );
    }
    let fp16 = || cache_of(model, QuantKinds::uniform(CacheKind::Fp16), 0);
    let mut measured = Vec::new();
    for (name, kinds) in candidates() {
        let bytes = bytes_per_token(model, kinds, device)?;
        let fits = req
            .budget_bytes
            .is_none_or(|b| bytes.saturating_mul(req.max_seq_len as u64) <= b);
        let (quality, passes) = if !fits {
            (None, false)
        } else if kinds == QuantKinds::uniform(CacheKind::Fp16) {
            (None, true)
        } else {
            let cand = || cache_of(model, kinds, 0);
            let q = compare_caches(model, probe, probe.len(), Some(1), device, &fp16, &cand)?;
            let g = req.gates;
            let ok = q.delta_nll <= g.max_delta_nll
                && q.ppl_ratio <= g.max_ppl_ratio
                && q.mean_kl <= g.max_mean_kl;
            (Some(q), ok)
        };
        let speed = if req.speed_probe && passes {
            Some(decode_speed(model, cache_of(model, kinds, 0), probe, device)?)
        } else {
            None
        };
        measured.push(Candidate {
            name: name.to_string(),
            k: kinds.k,
            v: kinds.v,
            rotate_k: kinds.rotate_k,
            bytes_per_token: bytes,
            fits_budget: fits,
            quality,
            passes_gates: passes,
            decode_tokens_per_sec: speed,
        });
    }
    // Smallest passing; then fastest. Nothing passes: the smallest that fits, else the smallest.
    let pick = |pool: Vec<&Candidate>| -> Option<Candidate> {
        pool.into_iter()
            .min_by(|a, b| {
                a.bytes_per_token.cmp(&b.bytes_per_token).then(
                    b.decode_tokens_per_sec
                        .unwrap_or(0.0)
                        .total_cmp(&a.decode_tokens_per_sec.unwrap_or(0.0)),
                )
            })
            .cloned()
    };
    let chosen = pick(measured.iter().filter(|c| c.passes_gates).collect())
        .or_else(|| pick(measured.iter().filter(|c| c.fits_budget).collect()))
        .or_else(|| pick(measured.iter().collect()))
        .ok_or_else(|| candle_core::Error::Msg("no cache candidates".into()))?;
    let decision = Decision {
        chosen: chosen.name.clone(),
        k: chosen.k,
        v: chosen.v,
        rotate_k: chosen.rotate_k,
        candidates: measured,
        measured_at: now(),
        reused: false,
    };
    if let Some(p) = &path {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            crate::record::write_json(p, &decision).map_err(crate::record::RecordError::into_io)
        };
        if let Err(e) = write() {
            tracing::warn!(
                "could not store the cache policy decision at {}: {e}",
                p.display()
            );
        }
    }
    Ok(decision)
}

/// Decode steps per second over `cache` after prefilling `probe` (8 greedy-fed steps).
fn decode_speed(
    model: &LanguageModel,
    mut cache: KvCache,
    probe: &[u32],
    device: &Device,
) -> candle_core::Result<f64> {
    let ids = candle_core::Tensor::from_slice(probe, (1, probe.len()), device)?;
    model.forward_hidden(&ids, &mut ForwardCtx::cached(&mut cache, 0))?;
    let steps = 8;
    let start = Instant::now();
    for i in 0..steps {
        let one = candle_core::Tensor::from_slice(&probe[i % probe.len()..][..1], (1, 1), device)?;
        let pos = probe.len() + i;
        let h = model.forward_hidden(&one, &mut ForwardCtx::cached(&mut cache, pos))?;
        model.logits(&h)?;
    }
    Ok(steps as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// `--cache-kind auto` could not run.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum AutoCacheError {
    #[error("--cache-kind auto probes real text and needs the model's tokenizer")]
    NoTokenizer,
    #[error("cache policy: {0}")]
    Policy(String),
}

impl AutoCacheError {
    /// A model that cannot be probed (exit code 2) rather than a probe that failed.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::NoTokenizer)
    }
}

/// Replace `cfg.auto` by the storage [`choose`] picks for `loaded` (stored decisions under
/// `$CARAMBA_CACHE/policy/`); a config without `auto` passes through.
pub fn resolve(
    cfg: &super::cache_config::CacheConfig,
    loaded: &crate::loader::LoadedModel,
) -> Result<super::cache_config::CacheConfig, AutoCacheError> {
    let Some(a) = cfg.auto else {
        return Ok(cfg.clone());
    };
    let tok = loaded.tokenizer.as_ref().ok_or(AutoCacheError::NoTokenizer)?;
    let mut probe = tok
        .encode(PROBE_TEXT, false)
        .map_err(|e| AutoCacheError::Policy(e.to_string()))?;
    probe.truncate(loaded.max_seq_len);
    let req = PolicyRequest {
        model_id: loaded.path.display().to_string(),
        max_seq_len: loaded.max_seq_len,
        budget_bytes: a.budget_bytes,
        gates: a.gates,
        speed_probe: a.speed_probe,
        reprobe_secs: 3600,
    };
    let store = crate::loader::fetch::cache_dir().join("policy");
    let d = choose(&loaded.model, &probe, &loaded.device, &req, Some(&store))
        .map_err(|e| AutoCacheError::Policy(e.to_string()))?;
    if a.explain {
        eprint!("{}", d.table());
        if d.reused {
            eprintln!(
                "(stored decision, measured {} s ago)",
                now().saturating_sub(d.measured_at)
            );
        }
    }
    tracing::info!("--cache-kind auto chose {}", d.chosen);
    let center_k = cfg.kinds.is_none_or(|k| k.center_k);
    Ok(super::cache_config::CacheConfig {
        kinds: Some(QuantKinds {
            k: d.k,
            v: d.v,
            k_geo: None,
            rotate_k: d.rotate_k,
            center_k,
            rotate_v: d.rotate_k,
        }),
        auto: None,
        ..cfg.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::{LoadOptions, load};

    #[test]
    fn budget_gates_and_the_stored_decision() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny_llama");
        let m = load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
        let probe: Vec<u32> = (0..48u32).map(|i| (i * 37 + 11) % 300 + 3).collect();
        let store = tempfile::tempdir().unwrap();
        // 2 layers × 2 KV heads × 16 × (K, V): fp16 2·2·2·32 = 256 bytes per token, q8_0 2·2·2·18 = 144,
        // q4_0 2·2·2·10 = 80.
        let mut req = PolicyRequest {
            model_id: "tiny".into(),
            max_seq_len: 100,
            budget_bytes: Some(100 * 200),
            gates: Gates {
                max_delta_nll: 10.0,
                max_ppl_ratio: 10.0,
                max_mean_kl: 10.0,
            },
            speed_probe: true,
            reprobe_secs: 3600,
        };
        let d = choose(&m.model, &probe, &Device::Cpu, &req, Some(store.path())).unwrap();
        let bytes: Vec<u64> = d.candidates.iter().map(|c| c.bytes_per_token).collect();
        assert_eq!(bytes, [256, 144, 112, 80, 80]);
        assert!(!d.candidates[0].fits_budget && d.candidates[1].fits_budget);
        assert_eq!((d.k, d.v), (CacheKind::Q4_0, CacheKind::Q4_0), "{}", d.table());
        assert!(!d.reused && d.table().contains("← chosen"));
        let again = choose(&m.model, &probe, &Device::Cpu, &req, Some(store.path())).unwrap();
        assert!(again.reused);
        // Gates nothing but fp16 passes: the budget then decides alone, among what fits.
        req.gates = Gates {
            max_delta_nll: -1.0,
            ..req.gates
        };
        req.budget_bytes = None;
        req.speed_probe = false;
        let strict = choose(&m.model, &probe, &Device::Cpu, &req, None).unwrap();
        assert_eq!(strict.chosen, "fp16", "{}", strict.table());
    }
}
