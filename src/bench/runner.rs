//! Runs a target's `benchmarks:` list on its models and gathers the results: tables for the
//! [`Report`], generations and behaviour outcomes for their own JSONL files.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::behavior::BehaviorRecord;
use super::generation::GenerationRecord;
use super::latency::{LatencyGrid, measure_latency};
use super::memory::{MemoryGrid, PEAK_METHOD, measure_memory};
use super::spec::{BenchmarkSpec, PerplexityBench};
use super::{AccuracyResult, BenchError, BenchModel, LatencyResult, MemoryResult, PerplexityResult, Report};

/// What the benchmarks of a target need from it.
#[derive(Debug, Clone, Default)]
pub struct BenchContext {
    /// The target's token file and held-out fraction: `perplexity` without `data:` reads the
    /// file's tail (the validation split).
    pub held_out: Option<(PathBuf, f64)>,
    /// `perplexity` without `block_size:` uses this. Default (0): 512.
    pub block_size: usize,
}

/// Everything a list of benchmarks measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchOutcome {
    pub perplexity: Vec<PerplexityResult>,
    pub latency: Vec<LatencyResult>,
    pub memory: Vec<MemoryResult>,
    pub accuracy: Vec<AccuracyResult>,
    pub generation: Vec<GenerationRecord>,
    pub behavior: Vec<BehaviorRecord>,
}

/// Run `specs` in order, each on every model (the models interleaved where timing matters).
pub fn run_benchmarks(
    specs: &[BenchmarkSpec],
    models: &[BenchModel],
    ctx: &BenchContext,
) -> Result<BenchOutcome, BenchError> {
    let mut out = BenchOutcome::default();
    for spec in specs {
        tracing::info!(benchmark = spec.kind(), "{}", spec.describe());
        match spec {
            BenchmarkSpec::Perplexity(p) => {
                for m in models {
                    out.perplexity.push(perplexity(m, p, ctx)?);
                }
            }
            BenchmarkSpec::Latency(l) => out
                .latency
                .extend(measure_latency(models, &LatencyGrid::from(l))?),
            BenchmarkSpec::Memory(mem) => out.memory.extend(measure_memory(models, &MemoryGrid::from(mem))?),
            BenchmarkSpec::Accuracy(a) => {
                for task in &a.tasks {
                    for m in models {
                        out.accuracy
                            .push(super::accuracy::score_task(m, Path::new(task), a.limit)?);
                    }
                }
            }
            BenchmarkSpec::Generation(g) => {
                let prompts = super::generation::read_prompts(Path::new(&g.prompts))?;
                for m in models {
                    out.generation
                        .extend(super::generation::generate_all(m, &prompts, g.max_new_tokens)?);
                }
            }
            BenchmarkSpec::Behavior(b) => {
                let suite = super::behavior::read_suite(Path::new(&b.suite))?;
                for m in models {
                    let (row, records) = super::behavior::run_suite(m, &suite)?;
                    out.accuracy.push(row);
                    out.behavior.extend(records);
                }
            }
        }
    }
    Ok(out)
}

/// Perplexity of `m` as `p` asks.
pub fn perplexity(
    m: &BenchModel,
    p: &PerplexityBench,
    ctx: &BenchContext,
) -> Result<PerplexityResult, BenchError> {
    let block_size = p
        .block_size
        .unwrap_or(if ctx.block_size == 0 { 512 } else { ctx.block_size })
        .min(m.max_seq_len);
    let tokens = match (&p.data, &ctx.held_out) {
        (Some(path), _) => read_tokens(Path::new(path), m)?,
        (None, Some((path, val_frac))) => held_out_tokens(path, *val_frac, p.blocks * block_size)?,
        (None, None) => {
            return Err(BenchError::Model {
                model: m.name.clone(),
                message: "`perplexity` needs `data:` (a .txt or .npy file) here".into(),
            });
        }
    };
    let kinds = p.cache_kind.map(crate::model::QuantKinds::uniform);
    let r = crate::infer::perplexity::perplexity_through_cache(
        m.model,
        &tokens,
        block_size,
        Some(p.blocks),
        &m.device,
        kinds,
    )
    .map_err(|e| BenchError::compute(&m.name, e))?;
    Ok(PerplexityResult {
        model: m.name.clone(),
        perplexity: r.perplexity,
        nll: r.nll,
        tokens: r.tokens as u64,
        block_size,
        cache_kind: p.cache_kind.map_or("none".into(), |k| k.name().into()),
    })
}

/// Token ids of a `.npy` file, or of a text file encoded with `m`'s tokenizer.
pub fn read_tokens(path: &Path, m: &BenchModel) -> Result<Vec<u32>, BenchError> {
    if path.extension().is_some_and(|e| e == "npy") {
        let bad = |e: crate::data::DataError| BenchError::BadInput {
            path: path.to_path_buf(),
            line: None,
            message: e.to_string(),
            help: "a 1-D .npy of token ids (`caramba prepare` writes one)".into(),
        };
        let file = crate::data::TokenFile::open(path).map_err(bad)?;
        return file.get(0..file.len()).map_err(bad);
    }
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    m.tokenizer("perplexity (of a text file)")?
        .encode(&text, false)
        .map_err(|e| BenchError::compute(&m.name, e))
}

/// The first `max` tokens of the held-out tail (`val_frac`) of a token file; the file's last
/// `max` tokens when it holds nothing back.
pub fn held_out_tokens(path: &Path, val_frac: f64, max: usize) -> Result<Vec<u32>, BenchError> {
    let bad = |e: crate::data::DataError| BenchError::BadInput {
        path: path.to_path_buf(),
        line: None,
        message: e.to_string(),
        help: "the target's data must be prepared before its benchmarks run".into(),
    };
    let file = crate::data::TokenFile::open(path).map_err(bad)?;
    let n = file.len();
    let n_val = (n as f64 * val_frac).round() as usize;
    let start = if n_val > 1 {
        n - n_val
    } else {
        n.saturating_sub(max)
    };
    file.get(start..n.min(start + max)).map_err(bad)
}

impl BenchOutcome {
    /// Append the tables to `report`.
    pub fn extend_report(&mut self, report: &mut Report) {
        report.perplexity.append(&mut self.perplexity);
        report.latency.append(&mut self.latency);
        report.memory.append(&mut self.memory);
        report.accuracy.append(&mut self.accuracy);
    }

    /// Write `generations.jsonl` and `behavior.jsonl` (when there are any) into `dir`, and add
    /// them, with how memory peaks were measured, to `dir/report.json` (written before).
    pub fn write_extras(&self, report: &Report, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
        let mut files = Vec::new();
        let mut extra = serde_json::Map::new();
        if !self.generation.is_empty() {
            let path = dir.join("generations.jsonl");
            super::generation::write_jsonl(&path, &self.generation)?;
            extra.insert(
                "generation".into(),
                serde_json::to_value(&self.generation).unwrap_or_default(),
            );
            files.push(path);
        }
        if !self.behavior.is_empty() {
            let path = dir.join("behavior.jsonl");
            super::generation::write_jsonl(&path, &self.behavior)?;
            extra.insert(
                "behavior".into(),
                serde_json::to_value(&self.behavior).unwrap_or_default(),
            );
            files.push(path);
        }
        if report.memory.iter().any(|r| r.peak_bytes.is_some()) {
            extra.insert("memory_peak_method".into(), PEAK_METHOD.into());
        }
        if !extra.is_empty() {
            merge_report_json(&dir.join("report.json"), extra)?;
        }
        Ok(files)
    }
}

/// Add top-level keys to an existing `report.json`, atomically.
pub fn merge_report_json(
    path: &Path,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<(), BenchError> {
    let w = |e: String| BenchError::Write(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| w(e.to_string()))?;
    let mut json: serde_json::Value = serde_json::from_str(&text).map_err(|e| w(e.to_string()))?;
    if let Some(obj) = json.as_object_mut() {
        obj.extend(extra);
    }
    crate::record::write_json(path, &json).map_err(|e| w(e.to_string()))
}
