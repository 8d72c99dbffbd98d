//! The headline comparison of two models, computed from a [`Report`]'s results (never stored as input).
//!
//! Which models: `"teacher"` (baseline) and `"student"` (candidate) when both names occur (ASCII case
//! ignored); otherwise the first two models in order of appearance ([`Report::models`]).
//! Every comparison uses only configurations measured for both models ("matched"):
//! - perplexity: the first baseline result whose `(set, block_size, cache_kind)` the candidate also has;
//!   `ratio = candidate / baseline` (lower is better, 1 = no loss);
//! - perplexity per text set (`in_domain`, `out_of_domain`, …, in order of first appearance): at the
//!   first baseline `(block_size, cache_kind)` matched in every set, else each set's first match; each
//!   row also carries the KV bytes-per-token ratio (candidate / baseline) of the KV comparison below;
//! - throughput: the smallest matched batch size, the cache kind of the baseline's first result at that batch,
//!   then per model the median of `decode_tokens_per_sec.median` over the matched `(prompt_len, gen_len)`
//!   points; `speedup = candidate / baseline`;
//! - KV cache: the cache kind of the baseline's first matched `(seq_len, batch_size, cache_kind)` result, then
//!   per model the median of `kv_bytes / (seq_len · batch_size)` over the matched points;
//!   `reduction = baseline / candidate`.
//!
//! A comparison is `None` when nothing is matched or a value is not positive (a ratio would be undefined).

use serde::{Deserialize, Serialize};

use crate::bench::results::{LatencyResult, PerplexityResult, Report, median_of_sorted};

/// Baseline-versus-candidate comparison of a [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// The reference model: `"teacher"` when present, else the first model.
    pub baseline: Option<String>,
    /// The compared model: `"student"` when present with a teacher, else the second model.
    pub candidate: Option<String>,
    /// Perplexity of both at one matched configuration.
    pub perplexity: Option<PerplexityComparison>,
    /// Perplexity of both on each text set, side by side (see the module header). Default: empty.
    #[serde(default)]
    pub perplexity_sets: Vec<PerplexityComparison>,
    /// Decode throughput of both over matched configurations.
    pub throughput: Option<ThroughputComparison>,
    /// KV-cache bytes per token of both over matched configurations.
    pub kv_cache: Option<KvCacheComparison>,
}

/// Perplexity of the two models at one matched `(block_size, cache_kind)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerplexityComparison {
    /// Text set (`in_domain`: the held-out split of the training data). Default: `in_domain`.
    #[serde(default = "in_domain")]
    pub set: String,
    /// Context window (tokens) both were evaluated at.
    pub block_size: usize,
    /// KV-cache storage kind both were evaluated with.
    pub cache_kind: String,
    /// Baseline perplexity.
    pub baseline: f64,
    /// Candidate perplexity.
    pub candidate: f64,
    /// `candidate / baseline`; below 1 means the candidate is better.
    pub ratio: f64,
    /// KV-cache bytes per token, candidate / baseline (`1 / kv_cache.reduction`); `None` without
    /// a KV comparison. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_bytes_ratio: Option<f64>,
}

fn in_domain() -> String {
    crate::bench::spec::IN_DOMAIN.into()
}

/// Median decode throughput of the two models over matched latency configurations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThroughputComparison {
    /// The (smallest matched) batch size.
    pub batch_size: usize,
    /// KV-cache storage kind of the compared runs.
    pub cache_kind: String,
    /// Number of matched `(prompt_len, gen_len)` points the medians are taken over.
    pub configs: usize,
    /// Baseline decode tokens per second.
    pub baseline_tokens_per_sec: f64,
    /// Candidate decode tokens per second.
    pub candidate_tokens_per_sec: f64,
    /// `candidate / baseline`; above 1 means the candidate is faster.
    pub speedup: f64,
}

/// KV-cache bytes per cached token of the two models over matched memory configurations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvCacheComparison {
    /// KV-cache storage kind of the compared results.
    pub cache_kind: String,
    /// Number of matched `(seq_len, batch_size)` points the medians are taken over.
    pub configs: usize,
    /// Baseline KV bytes per token (data and scales).
    pub baseline_bytes_per_token: f64,
    /// Candidate KV bytes per token (data and scales).
    pub candidate_bytes_per_token: f64,
    /// `baseline / candidate`; above 1 means the candidate's cache is smaller.
    pub reduction: f64,
}

impl Summary {
    /// Computes the summary of `report` (the rules are in this module's header).
    pub fn of(report: &Report) -> Summary {
        let (baseline, candidate) = pick_models(&report.models());
        let (perplexity, throughput, kv_cache) = match (&baseline, &candidate) {
            (Some(b), Some(c)) => (
                compare_perplexity(report, b, c),
                compare_throughput(report, b, c),
                compare_kv(report, b, c),
            ),
            _ => (None, None, None),
        };
        let kv_ratio = kv_cache.as_ref().map(|k| 1.0 / k.reduction);
        let perplexity_sets = match (&baseline, &candidate) {
            (Some(b), Some(c)) => compare_sets(report, b, c, kv_ratio),
            _ => Vec::new(),
        };
        let perplexity = perplexity.map(|p| PerplexityComparison {
            kv_bytes_ratio: kv_ratio,
            ..p
        });
        Summary {
            baseline,
            candidate,
            perplexity,
            perplexity_sets,
            throughput,
            kv_cache,
        }
    }
}

/// `(teacher, student)` when both occur, else the first two models.
fn pick_models(models: &[String]) -> (Option<String>, Option<String>) {
    let find = |role: &str| models.iter().find(|m| m.eq_ignore_ascii_case(role)).cloned();
    match (find("teacher"), find("student")) {
        (Some(t), Some(s)) => (Some(t), Some(s)),
        _ => (models.first().cloned(), models.get(1).cloned()),
    }
}

/// True when both values are finite and positive, so that their ratio is defined.
fn positive(a: f64, b: f64) -> bool {
    a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    median_of_sorted(&xs)
}

fn compare_perplexity(report: &Report, baseline: &str, candidate: &str) -> Option<PerplexityComparison> {
    report
        .perplexity
        .iter()
        .filter(|b| b.model == baseline)
        .find_map(|b| perplexity_pair(report, b, candidate))
}

/// `b` (a baseline result) with the candidate's result at the same set and configuration.
fn perplexity_pair(report: &Report, b: &PerplexityResult, candidate: &str) -> Option<PerplexityComparison> {
    let c = report.perplexity.iter().find(|c| {
        c.model == candidate && c.set == b.set && c.block_size == b.block_size && c.cache_kind == b.cache_kind
    })?;
    positive(b.perplexity, c.perplexity).then(|| PerplexityComparison {
        set: b.set.clone(),
        block_size: b.block_size,
        cache_kind: b.cache_kind.clone(),
        baseline: b.perplexity,
        candidate: c.perplexity,
        ratio: c.perplexity / b.perplexity,
        kv_bytes_ratio: None,
    })
}

fn compare_sets(
    report: &Report,
    baseline: &str,
    candidate: &str,
    kv_bytes_ratio: Option<f64>,
) -> Vec<PerplexityComparison> {
    let mut sets: Vec<&str> = Vec::new();
    for r in &report.perplexity {
        if !sets.contains(&r.set.as_str()) {
            sets.push(&r.set);
        }
    }
    let pairs = |set: &str| -> Vec<PerplexityComparison> {
        (report.perplexity.iter())
            .filter(|b| b.model == baseline && b.set == set)
            .filter_map(|b| perplexity_pair(report, b, candidate))
            .collect()
    };
    let per_set: Vec<Vec<PerplexityComparison>> = sets.iter().map(|s| pairs(s)).collect();
    // why: the sets are compared side by side, so measure them the same way where possible.
    let common = per_set.first().and_then(|first| {
        first
            .iter()
            .map(|p| (p.block_size, p.cache_kind.clone()))
            .find(|key| {
                per_set
                    .iter()
                    .all(|ps| ps.iter().any(|p| (p.block_size, p.cache_kind.clone()) == *key))
            })
    });
    per_set
        .into_iter()
        .filter_map(|ps| {
            let chosen = match &common {
                Some(key) => ps
                    .into_iter()
                    .find(|p| (p.block_size, p.cache_kind.clone()) == *key),
                None => ps.into_iter().next(),
            };
            chosen.map(|p| PerplexityComparison { kv_bytes_ratio, ..p })
        })
        .collect()
}

fn compare_throughput(report: &Report, baseline: &str, candidate: &str) -> Option<ThroughputComparison> {
    // Each baseline configuration once, paired with the candidate's first result at the same configuration.
    let key = |r: &LatencyResult| (r.prompt_len, r.gen_len, r.batch_size, r.cache_kind.clone());
    let mut matched: Vec<(&LatencyResult, &LatencyResult)> = Vec::new();
    for b in report.latency.iter().filter(|r| r.model == baseline) {
        if matched.iter().any(|(m, _)| key(m) == key(b)) {
            continue;
        }
        if let Some(c) = report
            .latency
            .iter()
            .find(|c| c.model == candidate && key(c) == key(b))
        {
            matched.push((b, c));
        }
    }
    let batch_size = matched.iter().map(|(b, _)| b.batch_size).min()?;
    let (first, _) = matched.iter().find(|(b, _)| b.batch_size == batch_size)?;
    let cache_kind = first.cache_kind.clone();
    let points: Vec<_> = matched
        .iter()
        .filter(|(b, _)| b.batch_size == batch_size && b.cache_kind == cache_kind)
        .collect();
    let base = median(
        points
            .iter()
            .map(|(b, _)| b.decode_tokens_per_sec.median)
            .collect(),
    )?;
    let cand = median(
        points
            .iter()
            .map(|(_, c)| c.decode_tokens_per_sec.median)
            .collect(),
    )?;
    positive(base, cand).then(|| ThroughputComparison {
        batch_size,
        cache_kind,
        configs: points.len(),
        baseline_tokens_per_sec: base,
        candidate_tokens_per_sec: cand,
        speedup: cand / base,
    })
}

fn compare_kv(report: &Report, baseline: &str, candidate: &str) -> Option<KvCacheComparison> {
    let mut matched: Vec<(f64, f64, &str, (usize, usize))> = Vec::new();
    for b in report.memory.iter().filter(|r| r.model == baseline) {
        let key = (b.seq_len, b.batch_size);
        if matched.iter().any(|m| m.2 == b.cache_kind && m.3 == key) {
            continue;
        }
        let twin = report.memory.iter().find(|c| {
            c.model == candidate && (c.seq_len, c.batch_size) == key && c.cache_kind == b.cache_kind
        });
        if let Some((bb, cb)) = twin.and_then(|c| Some((b.kv_bytes_per_token()?, c.kv_bytes_per_token()?))) {
            matched.push((bb, cb, &b.cache_kind, key));
        }
    }
    let cache_kind = matched.first()?.2.to_owned();
    let points: Vec<_> = matched.iter().filter(|m| m.2 == cache_kind).collect();
    let base = median(points.iter().map(|m| m.0).collect())?;
    let cand = median(points.iter().map(|m| m.1).collect())?;
    positive(base, cand).then(|| KvCacheComparison {
        cache_kind,
        configs: points.len(),
        baseline_bytes_per_token: base,
        candidate_bytes_per_token: cand,
        reduction: base / cand,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_win_over_order_and_order_is_the_fallback() {
        let names = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let pick = |xs: &[&str]| pick_models(&names(xs));
        assert_eq!(
            pick(&["student", "x", "Teacher"]),
            (Some("Teacher".into()), Some("student".into()))
        );
        assert_eq!(
            pick(&["llama", "dba", "gqa"]),
            (Some("llama".into()), Some("dba".into()))
        );
        assert_eq!(pick(&["teacher"]), (Some("teacher".into()), None));
        assert_eq!(pick(&[]), (None, None));
    }
}
