//! Runs a target's `benchmarks:` list on its models and gathers the results: tables for the
//! [`Report`], generations and behaviour outcomes for their own JSONL files.
//!
//! `perplexity` measures each text set ([`TextSet`]) on every model: `in_domain` is the held-out
//! tail of the target's data; a set with `data:` is all of its own file, built on first use from
//! `prepare:` (like a target's data) and labelled with its source.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::behavior::BehaviorRecord;
use super::generation::GenerationRecord;
use super::latency::{LatencyGrid, measure_latency};
use super::memory::{MemoryGrid, PEAK_METHOD, measure_memory};
use super::results::TextSource;
use super::spec::{BenchmarkSpec, PerplexityBench, TextSet};
use super::{AccuracyResult, BenchError, BenchModel, LatencyResult, MemoryResult, PerplexityResult, Report};
use crate::data::prepare::{SourceRecord, read_source_record, write_source_record};

/// What the benchmarks of a target need from it.
#[derive(Debug, Clone, Default)]
pub struct BenchContext {
    /// The target's token file and held-out fraction: `perplexity` without `data:` reads the
    /// file's tail (the validation split).
    pub held_out: Option<(PathBuf, f64)>,
    /// `perplexity` without `block_size:` uses this. Default (0): 512.
    pub block_size: usize,
    /// Tokenizer a text set's `prepare:` encodes with when the set names none: `bytes` or a
    /// `tokenizer.json` path (the target's data tokenizer). Default: `bytes`.
    pub tokenizer: Option<String>,
    /// What a set's `tokenizer: teacher` means: the upcycle teacher's `tokenizer.json`. `None`
    /// outside an upcycle.
    pub teacher_tokenizer: Option<String>,
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
                for set in p.text_sets() {
                    let text = open_set(&set, ctx)?;
                    for m in models {
                        out.perplexity.push(perplexity(m, p, &text, ctx)?);
                    }
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

/// A text set made ready: its name, where its tokens are, and what it was prepared from.
#[derive(Debug, Clone)]
pub struct OpenSet {
    pub name: String,
    /// `None`: the held-out tail of the target's data; else a file read from its start.
    pub file: Option<PathBuf>,
    /// `<file>.source.json`, when the file has one.
    pub record: Option<SourceRecord>,
}

/// Resolve `set`: build its file from `prepare:` when it is missing (and record its source).
pub fn open_set(set: &TextSet, ctx: &BenchContext) -> Result<OpenSet, BenchError> {
    let Some(data) = &set.data else {
        return Ok(OpenSet {
            name: set.name.clone(),
            file: None,
            record: None,
        });
    };
    let path = PathBuf::from(&data.path);
    if !path.exists() {
        let Some(prep) = &data.prepare else {
            return Err(crate::data::DataError::Missing { path }.into());
        };
        let name = match data.tokenizer.as_deref().or(prep.tokenizer.as_deref()) {
            Some("teacher") => ctx
                .teacher_tokenizer
                .clone()
                .ok_or_else(|| BenchError::BadInput {
                    path: path.clone(),
                    line: None,
                    message: format!(
                        "set `{}` asks for `tokenizer: teacher`, but this target has no teacher",
                        set.name
                    ),
                    help: "name the tokenizer (`bytes` or a tokenizer.json path), or leave it out".into(),
                })?,
            Some(other) => other.to_string(),
            None => ctx.tokenizer.clone().unwrap_or_else(|| "bytes".into()),
        };
        let tokenizer = crate::data::Tokenizer::from_name(&name)?;
        let summary = crate::data::prepare(prep, &tokenizer, &path)?;
        write_source_record(prep, &summary)?;
        tracing::info!(set = %set.name, "prepared {summary}");
    }
    Ok(OpenSet {
        name: set.name.clone(),
        record: read_source_record(&path),
        file: Some(path),
    })
}

/// Perplexity of `m` on the text set `set`, as `p` asks.
pub fn perplexity(
    m: &BenchModel,
    p: &PerplexityBench,
    set: &OpenSet,
    ctx: &BenchContext,
) -> Result<PerplexityResult, BenchError> {
    let block_size = p
        .block_size
        .unwrap_or(if ctx.block_size == 0 { 512 } else { ctx.block_size })
        .min(m.max_seq_len);
    let (tokens, source) = match (&set.file, &ctx.held_out) {
        (Some(path), _) => {
            let tokens = read_tokens(path, m)?;
            let rec = set.record.as_ref();
            let source = TextSource {
                path: path.display().to_string(),
                split: "file".into(),
                tokens: tokens.len() as u64,
                debian_package: rec.and_then(|r| r.debian_package.clone()),
                package_version: rec.and_then(|r| r.package_version.clone()),
                files: rec.map(|r| r.files),
            };
            (tokens, source)
        }
        (None, Some((path, val_frac))) => {
            let (tokens, held_out) = held_out_split(path, *val_frac, p.blocks * block_size)?;
            let rec = read_source_record(path);
            let source = TextSource {
                path: path.display().to_string(),
                split: "held_out".into(),
                tokens: held_out as u64,
                debian_package: rec.as_ref().and_then(|r| r.debian_package.clone()),
                package_version: rec.as_ref().and_then(|r| r.package_version.clone()),
                files: None,
            };
            (tokens, source)
        }
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
        set: set.name.clone(),
        source: Some(source),
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
    held_out_split(path, val_frac, max).map(|(tokens, _)| tokens)
}

/// [`held_out_tokens`] and the number of tokens in the held-out tail.
fn held_out_split(path: &Path, val_frac: f64, max: usize) -> Result<(Vec<u32>, usize), BenchError> {
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
    let tokens = file.get(start..n.min(start + max)).map_err(bad)?;
    Ok((tokens, n - start))
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
