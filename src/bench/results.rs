//! The result types every benchmark produces, and the [`Report`] that gathers them for the artifact writers.
//!
//! These are plain serde records: no number is hard-coded, every value comes from a measurement. A model is
//! named by its role string (`"teacher"`, `"student"`, or any name); [`Report::summary`] compares two of them.
//! Times are milliseconds, sizes are bytes, throughputs are tokens per second.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bench::summary::Summary;

/// Median, minimum and maximum of a repeated measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stat {
    /// Median over the timed runs (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value over the timed runs.
    pub min: f64,
    /// Largest value over the timed runs.
    pub max: f64,
}

impl Stat {
    /// Median, min and max of `samples`; `None` when `samples` is empty or holds a non-finite value.
    pub fn from_samples(samples: &[f64]) -> Option<Stat> {
        if samples.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = median_of_sorted(&sorted)?;
        Some(Stat {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Median of an ascending slice: the middle value, or the mean of the two middle values; `None` when empty.
pub(crate) fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some(0.5 * (sorted[n / 2 - 1] + sorted[n / 2])),
    }
}

/// Perplexity of one model on one token dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerplexityResult {
    /// Model role or name (`"teacher"`, `"student"`, …).
    pub model: String,
    /// Text set the tokens came from (`"in_domain"`: the held-out split of the training data).
    /// Default: `"in_domain"` (reports written before sets existed).
    #[serde(default = "in_domain")]
    pub set: String,
    /// Where the set's tokens came from; `None` where not recorded (e.g. verification's rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TextSource>,
    /// `exp(nll)`.
    pub perplexity: f64,
    /// Mean negative log-likelihood per predicted token, in nats.
    pub nll: f64,
    /// Number of predicted tokens the mean is taken over.
    pub tokens: u64,
    /// Context window (tokens) of each evaluated block.
    pub block_size: usize,
    /// KV-cache storage kind used while evaluating (`"none"` when evaluated without a cache, `"fp16"`, `"q8_0"`, …).
    pub cache_kind: String,
}

fn in_domain() -> String {
    crate::bench::spec::IN_DOMAIN.into()
}

/// Where a perplexity text set came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSource {
    /// The token (`.npy`) or text file.
    pub path: String,
    /// `"held_out"` (the tail of the target's training data) or `"file"` (all of a separate file).
    pub split: String,
    /// Tokens in the set (the held-out tail, or the whole file); the models read at most
    /// `blocks × block_size` of them.
    pub tokens: u64,
    /// Debian package the text was prepared from. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debian_package: Option<String>,
    /// That package's version. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_version: Option<String>,
    /// Number of text files tokenized. Default: none (not prepared by caramba, or not recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
}

/// Prefill and decode timing of one model at one `(prompt_len, gen_len, batch_size, cache_kind)` point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyResult {
    /// Model role or name.
    pub model: String,
    /// Prompt length in tokens.
    pub prompt_len: usize,
    /// Number of generated tokens per sequence.
    pub gen_len: usize,
    /// Number of sequences decoded together.
    pub batch_size: usize,
    /// KV-cache storage kind (`"fp16"`, `"q8_0"`, `"q4_0"`, …).
    pub cache_kind: String,
    /// Wall time of the prompt forward pass, in milliseconds.
    pub prefill_ms: Stat,
    /// Time to first token (prefill + first decode step), in milliseconds.
    pub ttft_ms: Stat,
    /// Generated tokens per second during decoding (`gen_len · batch_size / decode time`).
    pub decode_tokens_per_sec: Stat,
    /// Number of timed runs the statistics are taken over (warm-up runs excluded).
    pub runs: usize,
}

/// KV-cache and model memory of one model at one `(seq_len, batch_size, cache_kind)` point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryResult {
    /// Model role or name.
    pub model: String,
    /// Cached sequence length in tokens.
    pub seq_len: usize,
    /// Number of sequences cached together.
    pub batch_size: usize,
    /// KV-cache storage kind (`"fp16"`, `"q8_0"`, `"q4_0"`, `"nf4"`, …).
    pub cache_kind: String,
    /// Exact bytes held by the KV cache at `seq_len`: quantized data plus scales, all layers.
    pub kv_bytes: u64,
    /// Peak device memory during the run in bytes; `None` when this device cannot measure it.
    pub peak_bytes: Option<u64>,
    /// Why `peak_bytes` is `None` (for example "CPU: no allocator statistics"); `None` when measured.
    pub peak_unavailable: Option<String>,
    /// Bytes of the model's parameters.
    pub model_bytes: u64,
}

impl MemoryResult {
    /// KV-cache bytes per cached token (`kv_bytes / (seq_len · batch_size)`); `None` when no token is cached.
    pub fn kv_bytes_per_token(&self) -> Option<f64> {
        let tokens = self.seq_len.checked_mul(self.batch_size).filter(|&t| t > 0)?;
        Some(self.kv_bytes as f64 / tokens as f64)
    }
}

/// Score of one model on one downstream task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccuracyResult {
    /// Model role or name.
    pub model: String,
    /// Task name (`"arc_easy"`, `"hellaswag"`, …).
    pub task: String,
    /// Metric name (`"accuracy"`, `"accuracy_norm"`, …).
    pub metric: String,
    /// Metric value in [0, 1].
    pub value: f64,
    /// Number of evaluated examples.
    pub examples: u64,
    /// Number of in-context examples per prompt. Default: 0.
    #[serde(default)]
    pub num_fewshot: usize,
}

/// Where and how the results were produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Experiment name (the manifest's `name`).
    pub name: String,
    /// Path of the manifest the run came from.
    pub manifest: String,
    /// Name of the manifest target that ran.
    pub target: String,
    /// `git rev-parse HEAD` of the source tree, when known.
    pub git_revision: Option<String>,
    /// Device description (`"cpu"`, `"cuda:0 NVIDIA H100 80GB HBM3"`, …).
    pub device: String,
    /// Compute dtype of the models (`"f32"`, `"bf16"`, …).
    pub dtype: String,
    /// Build profile and cargo features (`"release"`, `"cuda"`, …).
    pub build_flags: Vec<String>,
    /// Versions of the components that matter (`"caramba"`, `"candle"`, `"rustc"`, drivers), by name.
    pub versions: BTreeMap<String, String>,
    /// When the report was created, RFC 3339 in UTC (`"2025-01-31T12:00:00Z"`).
    pub created_at: String,
}

/// Everything one experiment measured. The artifact writers turn it into files
/// (see [`crate::bench::artifacts::write_all`]); its summary is computed, never stored as input.
/// Unknown fields are ignored when reading, so `report.json` (with its computed `summary` and
/// `artifacts` sections) reads back as a `Report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Where and how the results were produced.
    pub metadata: Metadata,
    /// Perplexity results, in the order they were measured. Default: empty.
    #[serde(default)]
    pub perplexity: Vec<PerplexityResult>,
    /// Latency results, in the order they were measured. Default: empty.
    #[serde(default)]
    pub latency: Vec<LatencyResult>,
    /// Memory results, in the order they were measured. Default: empty.
    #[serde(default)]
    pub memory: Vec<MemoryResult>,
    /// Downstream-task results. Default: empty.
    #[serde(default)]
    pub accuracy: Vec<AccuracyResult>,
    /// Output of the verify stage (teacher/student comparisons), as it was produced. Default: null.
    #[serde(default)]
    pub verify: serde_json::Value,
}

impl Report {
    /// The model names, in order of first appearance across perplexity, latency, memory and accuracy results.
    pub fn models(&self) -> Vec<String> {
        let names = (self.perplexity.iter().map(|r| &r.model))
            .chain(self.latency.iter().map(|r| &r.model))
            .chain(self.memory.iter().map(|r| &r.model))
            .chain(self.accuracy.iter().map(|r| &r.model));
        let mut models: Vec<String> = Vec::new();
        for name in names {
            if !models.contains(name) {
                models.push(name.clone());
            }
        }
        models
    }

    /// The teacher/student comparison computed from the results (see [`Summary`]).
    pub fn summary(&self) -> Summary {
        Summary::of(self)
    }

    /// Paths of every number that is NaN or infinite (`"latency[3].prefill_ms.median"`); JSON cannot hold them.
    pub fn non_finite_fields(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let mut check = |path: String, x: f64| {
            if !x.is_finite() {
                bad.push(path);
            }
        };
        for (i, r) in self.perplexity.iter().enumerate() {
            check(format!("perplexity[{i}].perplexity"), r.perplexity);
            check(format!("perplexity[{i}].nll"), r.nll);
        }
        for (i, r) in self.latency.iter().enumerate() {
            for (name, stat) in [
                ("prefill_ms", r.prefill_ms),
                ("ttft_ms", r.ttft_ms),
                ("decode_tokens_per_sec", r.decode_tokens_per_sec),
            ] {
                check(format!("latency[{i}].{name}.median"), stat.median);
                check(format!("latency[{i}].{name}.min"), stat.min);
                check(format!("latency[{i}].{name}.max"), stat.max);
            }
        }
        for (i, r) in self.accuracy.iter().enumerate() {
            check(format!("accuracy[{i}].value"), r.value);
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_of_samples_is_order_free() {
        let s = Stat::from_samples(&[3.0, 1.0, 2.0, 10.0]).expect("non-empty");
        assert_eq!(
            s,
            Stat {
                median: 2.5,
                min: 1.0,
                max: 10.0
            }
        );
        assert_eq!(Stat::from_samples(&[4.0, 1.0, 2.0]).map(|s| s.median), Some(2.0));
        assert_eq!(Stat::from_samples(&[]), None);
        assert_eq!(Stat::from_samples(&[1.0, f64::NAN]), None);
    }
}
