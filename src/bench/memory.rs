//! Memory per sequence length × batch size × cache kind: exact KV-cache bytes (quantized data and
//! scales, every layer), the model's parameter bytes, and the process's peak resident memory.
//!
//! The peak is Linux's `VmHWM` (high-water mark of the resident set) from `/proc/self/status`,
//! reset before each point by writing `5` to `/proc/self/clear_refs` (Linux ≥ 4.0; a process may
//! always write its own). It covers the whole process — weights, activations of the prefill that
//! fills the cache, the cache — so it answers "how much RAM does this point need". Where the
//! reset is refused, or the model runs on a GPU (whose allocator candle does not expose), the
//! peak is `None` with the reason, never 0.

use candle_core::Device;
use rand::{Rng, SeedableRng};

use super::latency::session;
use super::{BenchError, BenchModel, MemoryResult};
use crate::cache::CacheKind;
use crate::console::Progress;
use crate::model::ModelSpec;

/// How `peak_bytes` was measured, for the report.
pub const PEAK_METHOD: &str = "peak process RSS (Linux VmHWM) during a prefill of seq_len tokens into the cache, \
     reset before each point through /proc/self/clear_refs (points measured from the smallest to the largest); \
     includes weights, activations and memory the allocator kept from earlier points";

/// The points of a memory benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryGrid {
    pub seq_lens: Vec<usize>,
    pub batch_sizes: Vec<usize>,
    pub cache_kinds: Vec<CacheKind>,
    /// Fill real caches and measure the peak; otherwise exact bytes from the topology only.
    pub measure: bool,
}

impl From<&super::spec::MemoryBench> for MemoryGrid {
    fn from(b: &super::spec::MemoryBench) -> Self {
        Self {
            seq_lens: b.seq_lens.clone(),
            batch_sizes: b.batch_sizes.clone(),
            cache_kinds: b.cache_kinds.clone(),
            measure: b.measure,
        }
    }
}

/// Exact bytes `spec` caches for `seq_len` tokens of `batch` sequences stored as `kind`.
pub fn exact_kv_bytes(spec: &ModelSpec, kind: CacheKind, seq_len: usize, batch: usize) -> u64 {
    crate::compiler::stats::kv_bytes(&spec.topology, kind) * (seq_len * batch) as u64
}

/// Peak resident set of this process (Linux `VmHWM`) in bytes, when readable.
pub fn process_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reset the peak resident set to the current one (`echo 5 > /proc/self/clear_refs`).
pub fn reset_peak_rss() -> Result<(), String> {
    std::fs::write("/proc/self/clear_refs", b"5")
        .map_err(|e| format!("cannot reset the RSS peak (/proc/self/clear_refs: {e})"))
}

/// Rows of exact bytes only (no forward): `peak_bytes` is `None` with `why`.
pub fn exact_rows(models: &[(&str, &ModelSpec, u64)], grid: &MemoryGrid, why: &str) -> Vec<MemoryResult> {
    let mut out = Vec::new();
    for (name, spec, model_bytes) in models {
        for &kind in &grid.cache_kinds {
            for &batch in &grid.batch_sizes {
                for &seq_len in &grid.seq_lens {
                    out.push(MemoryResult {
                        model: name.to_string(),
                        seq_len,
                        batch_size: batch,
                        cache_kind: kind.name().into(),
                        kv_bytes: exact_kv_bytes(spec, kind, seq_len, batch),
                        peak_bytes: None,
                        peak_unavailable: Some(why.to_string()),
                        model_bytes: *model_bytes,
                    });
                }
            }
        }
    }
    out
}

/// Memory rows of every model; with `grid.measure`, each point fills a real cache by a prefill of
/// random tokens and reads back the cache's bytes and the process peak.
pub fn measure_memory(models: &[BenchModel], grid: &MemoryGrid) -> Result<Vec<MemoryResult>, BenchError> {
    if !grid.measure {
        let specs: Vec<(&str, &ModelSpec, u64)> = models
            .iter()
            .map(|m| (m.name.as_str(), m.spec, m.model_bytes))
            .collect();
        return Ok(exact_rows(
            &specs,
            grid,
            "not measured (`measure: false`): exact bytes from the topology",
        ));
    }
    let n_points = grid.cache_kinds.len() * grid.batch_sizes.len() * grid.seq_lens.len();
    let progress = Progress::new((n_points * models.len()) as u64, "memory");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut out = Vec::new();
    // why: freed memory stays resident (the allocator keeps it), and a reset peak starts from the
    // current RSS; measuring the points from the smallest to the largest keeps what an earlier
    // point left behind below what the current one needs. Rows come out in grid order.
    let mut points = Vec::new();
    for &kind in &grid.cache_kinds {
        for &batch in &grid.batch_sizes {
            for &seq_len in &grid.seq_lens {
                points.push((points.len(), kind, batch, seq_len));
            }
        }
    }
    let mut by_size = points.clone();
    by_size.sort_by_key(|&(_, kind, batch, seq_len)| (seq_len * batch, kind.row_bytes(64)));
    for m in models {
        let mut rows: Vec<(usize, MemoryResult)> = Vec::with_capacity(points.len());
        for &(index, kind, batch, seq_len) in &by_size {
            progress.set_message(&format!("{} {kind} b={batch} seq={seq_len}", m.name));
            m.check_context(seq_len, "the memory point")?;
            let reset = match &m.device {
                Device::Cpu => reset_peak_rss(),
                other => Err(format!(
                    "peak device memory is not measured on {other:?}: candle exposes no allocator statistics, \
                     and process RSS would miss device memory"
                )),
            };
            let prompts: Vec<Vec<u32>> = (0..batch)
                .map(|_| {
                    (0..seq_len)
                        .map(|_| rng.random_range(0..m.vocab() as u32))
                        .collect()
                })
                .collect();
            let mut g = session(m, kind, seq_len + 1);
            let filled = if batch == 1 {
                g.prefill(&prompts[0]).map(|_| ())
            } else {
                g.prefill_batch(&prompts).map(|_| ())
            };
            filled.map_err(|e| BenchError::compute(&m.name, e))?;
            let kv_bytes = g.cache().bytes() as u64;
            let exact = exact_kv_bytes(m.spec, kind, seq_len, batch);
            if kv_bytes != exact {
                tracing::warn!(
                    model = %m.name, %kind, seq_len, batch, measured = kv_bytes, exact,
                    "the filled cache holds a different number of bytes than the topology predicts"
                );
            }
            let (peak_bytes, peak_unavailable) = match reset {
                Ok(()) => match process_peak_rss() {
                    Some(p) => (Some(p), None),
                    None => (None, Some("/proc/self/status has no VmHWM".to_string())),
                },
                Err(why) => (None, Some(why)),
            };
            drop(g);
            rows.push((
                index,
                MemoryResult {
                    model: m.name.clone(),
                    seq_len,
                    batch_size: batch,
                    cache_kind: kind.name().into(),
                    kv_bytes,
                    peak_bytes,
                    peak_unavailable,
                    model_bytes: m.model_bytes,
                },
            ));
            progress.inc(1);
        }
        rows.sort_by_key(|(i, _)| *i);
        out.extend(rows.into_iter().map(|(_, r)| r));
    }
    Ok(out)
}
