//! The `benchmarks:` block of a manifest target: what to measure after the runs, on every model
//! of the target (teacher and student of an upcycle, the trained model of each standard run).
//!
//! ```yaml
//! benchmarks:
//!   - {kind: perplexity, blocks: 8, block_size: 512}
//!   - kind: perplexity            # in-domain and out-of-domain held-out text, side by side
//!     blocks: 32
//!     block_size: 512
//!     sets:
//!       - {name: in_domain}       # no `data:`: the held-out tail of the target's data
//!       - name: out_of_domain
//!         data:
//!           path: data/debian_devref.smollm2.npy
//!           tokenizer: teacher
//!           prepare: {debian_package: developers-reference, input: ["usr/share/developers-reference/_sources/*.rst.txt"]}
//!   - {kind: latency, prompt_lens: [128, 512], gen_lens: [32], batch_sizes: [1], cache_kinds: [fp16, q8_0]}
//!   - {kind: memory, seq_lens: [512, 1024, 2048, 4096], cache_kinds: [fp16, q8_0, q4_0]}
//!   - {kind: accuracy, tasks: [benches/tasks/python_basics.jsonl]}
//!   - {kind: generation, prompts: benches/prompts/python.txt, max_new_tokens: 64}
//!   - {kind: behavior, suite: benches/suites/python.yml}
//! ```
//! Every field has a default; unknown kinds and fields are rejected with their manifest path.

use serde::{Deserialize, Serialize};

use crate::cache::CacheKind;
use crate::data::PrepareSpec;

/// Name of the default text set: the held-out tail of the target's data.
pub const IN_DOMAIN: &str = "in_domain";

/// One benchmark of a target, tagged by `kind:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BenchmarkSpec {
    Perplexity(PerplexityBench),
    Latency(LatencyBench),
    Memory(MemoryBench),
    Accuracy(AccuracyBench),
    Generation(GenerationBench),
    Behavior(BehaviorBench),
}

/// `kind: perplexity`: mean NLL over non-overlapping windows of held-out tokens, per text set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerplexityBench {
    /// A text (.txt, tokenized with the model's tokenizer) or token (.npy) file: one set named
    /// after the path. Not together with `sets:`. Default: the held-out tail of the target's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Named texts, each measured on every model with the same `blocks` and `block_size`.
    /// Default: one set, `in_domain` (or `data:` when given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<TextSet>,
    /// Most windows evaluated. Default: 8.
    #[serde(default = "default_blocks")]
    pub blocks: usize,
    /// Tokens per window. Default: the target's `data.block_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    /// Push every window through a KV cache stored as this kind. Default: none (full forward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_kind: Option<CacheKind>,
}

/// One named text of a `perplexity` benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSet {
    /// Name in the results (`in_domain`, `out_of_domain`, …); unique within the benchmark.
    pub name: String,
    /// Where the text is. Default: the held-out tail (`val_frac`) of the target's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<TextSetData>,
}

/// The file of a [`TextSet`]: read from its start (all of it is held out: nothing trains on it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSetData {
    /// A token file (.npy), or a text file tokenized with the model's tokenizer.
    pub path: String,
    /// Tokenizer `prepare:` encodes with: `teacher` (an upcycle's teacher), `bytes`, or a
    /// `tokenizer.json` path. Default: the tokenizer of the target's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// How to build `path` (a .npy) when it does not exist, as in a target's `data:` block; the
    /// source (package, version, files, tokens) is kept beside it in `<path>.source.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<PrepareSpec>,
}

impl PerplexityBench {
    /// The sets to measure, defaults applied: `sets:`, else one set of `data:`, else `in_domain`.
    pub fn text_sets(&self) -> Vec<TextSet> {
        if !self.sets.is_empty() {
            return self.sets.clone();
        }
        match &self.data {
            Some(path) => vec![TextSet {
                name: path.clone(),
                data: Some(TextSetData {
                    path: path.clone(),
                    tokenizer: None,
                    prepare: None,
                }),
            }],
            None => vec![TextSet {
                name: IN_DOMAIN.into(),
                data: None,
            }],
        }
    }
}

/// `kind: latency`: prefill, time to first token and decode throughput over a grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyBench {
    /// Prompt lengths (random token ids). Default: [128].
    #[serde(default = "default_prompt_lens")]
    pub prompt_lens: Vec<usize>,
    /// Greedy tokens generated per run. Default: [32].
    #[serde(default = "default_gen_lens")]
    pub gen_lens: Vec<usize>,
    /// Sequences decoded together (left-padded batch API above 1). Default: [1].
    #[serde(default = "default_batch_sizes")]
    pub batch_sizes: Vec<usize>,
    /// Untimed runs before the timed ones, per point. Default: 1.
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    /// Timed runs per point (median, min, max over them). Default: 3.
    #[serde(default = "default_runs")]
    pub runs: usize,
    /// KV cache storage per run; `fp32` is the plain f32 cache. Default: [fp32].
    #[serde(default = "default_latency_kinds")]
    pub cache_kinds: Vec<CacheKind>,
}

/// `kind: memory`: exact KV bytes, model bytes and (where measurable) peak memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBench {
    /// Cached sequence lengths. Default: [512, 1024, 2048, 4096].
    #[serde(default = "default_seq_lens")]
    pub seq_lens: Vec<usize>,
    /// Sequences cached together. Default: [1].
    #[serde(default = "default_batch_sizes")]
    pub batch_sizes: Vec<usize>,
    /// KV cache storage kinds. Default: [fp16, q8_0, q4_0].
    #[serde(default = "default_memory_kinds")]
    pub cache_kinds: Vec<CacheKind>,
    /// Fill a real cache (a prefill of `seq_len` tokens) and measure the process peak; `false`
    /// computes the exact bytes from the topology only (no forward, no peak). Default: true.
    #[serde(default = "default_true")]
    pub measure: bool,
}

/// `kind: accuracy`: multiple-choice JSONL tasks scored by summed log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccuracyBench {
    /// JSONL files, one `{"prompt": …, "choices": […], "answer": index}` per line.
    pub tasks: Vec<String>,
    /// Score at most this many questions per task. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `kind: generation`: greedy continuations of a prompts file, saved to `generations.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationBench {
    /// One prompt per line, or JSONL (`{"prompt": …}` or a JSON string per line).
    pub prompts: String,
    /// Most tokens per prompt. Default: 64.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
}

/// `kind: behavior`: a YAML suite of eval cases (see [`crate::bench::eval_cases`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviorBench {
    /// Path of the suite.
    pub suite: String,
}

fn default_blocks() -> usize {
    8
}
fn default_prompt_lens() -> Vec<usize> {
    vec![128]
}
fn default_gen_lens() -> Vec<usize> {
    vec![32]
}
fn default_batch_sizes() -> Vec<usize> {
    vec![1]
}
fn default_warmup() -> usize {
    1
}
fn default_runs() -> usize {
    3
}
fn default_latency_kinds() -> Vec<CacheKind> {
    vec![CacheKind::Fp32]
}
fn default_seq_lens() -> Vec<usize> {
    vec![512, 1024, 2048, 4096]
}
fn default_memory_kinds() -> Vec<CacheKind> {
    vec![CacheKind::Fp16, CacheKind::Q8_0, CacheKind::Q4_0]
}
fn default_true() -> bool {
    true
}
fn default_max_new_tokens() -> usize {
    64
}

/// A value problem of a benchmark: the field (relative to the benchmark), the message and a help line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Relative path of the field (`blocks`, `sets[1].data.path`).
    pub field: String,
    pub message: String,
    pub help: String,
}

impl BenchmarkSpec {
    /// The `kind:` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Perplexity(_) => "perplexity",
            Self::Latency(_) => "latency",
            Self::Memory(_) => "memory",
            Self::Accuracy(_) => "accuracy",
            Self::Generation(_) => "generation",
            Self::Behavior(_) => "behavior",
        }
    }

    /// One line for `--print-plan`.
    pub fn describe(&self) -> String {
        let kinds = |ks: &[CacheKind]| ks.iter().map(|k| k.name()).collect::<Vec<_>>().join(",");
        let list = |xs: &[usize]| xs.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        match self {
            Self::Perplexity(p) => format!(
                "perplexity  {} blocks × {} tokens of {}{}",
                p.blocks,
                p.block_size.map_or("data.block_size".into(), |b| b.to_string()),
                describe_sets(p),
                p.cache_kind
                    .map(|k| format!(", through a {k} cache"))
                    .unwrap_or_default()
            ),
            Self::Latency(l) => format!(
                "latency     prompt [{}] × gen [{}] × batch [{}] × cache [{}], {} warm-up + {} timed",
                list(&l.prompt_lens),
                list(&l.gen_lens),
                list(&l.batch_sizes),
                kinds(&l.cache_kinds),
                l.warmup,
                l.runs
            ),
            Self::Memory(m) => format!(
                "memory      seq [{}] × batch [{}] × cache [{}], {}",
                list(&m.seq_lens),
                list(&m.batch_sizes),
                kinds(&m.cache_kinds),
                if m.measure { "measured" } else { "exact bytes only" }
            ),
            Self::Accuracy(a) => format!(
                "accuracy    {}{}",
                a.tasks.join(", "),
                a.limit.map(|n| format!(" (first {n})")).unwrap_or_default()
            ),
            Self::Generation(g) => format!("generation  {} (≤ {} tokens each)", g.prompts, g.max_new_tokens),
            Self::Behavior(b) => format!("behavior    {}", b.suite),
        }
    }

    /// Values serde accepts but a run cannot use (empty grids, zero lengths).
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        let mut positive = |field: &'static str, xs: &[usize]| {
            if xs.is_empty() {
                out.push(SpecProblem {
                    field: field.into(),
                    message: "the list is empty".into(),
                    help: format!("give at least one value, or leave `{field}` out for its default"),
                });
            } else if xs.contains(&0) {
                out.push(SpecProblem {
                    field: field.into(),
                    message: "every value must be at least 1".into(),
                    help: "remove the 0".into(),
                });
            }
        };
        match self {
            Self::Perplexity(p) => {
                positive("blocks", &[p.blocks]);
                if p.block_size.is_some_and(|b| b < 2) {
                    out.push(SpecProblem {
                        field: "block_size".into(),
                        message: "a window needs at least 2 tokens".into(),
                        help: "use 2 or more".into(),
                    });
                }
                out.extend(set_problems(p));
            }
            Self::Latency(l) => {
                positive("prompt_lens", &l.prompt_lens);
                positive("gen_lens", &l.gen_lens);
                positive("batch_sizes", &l.batch_sizes);
                positive("runs", &[l.runs]);
                if l.cache_kinds.is_empty() {
                    out.push(empty_kinds());
                }
            }
            Self::Memory(m) => {
                positive("seq_lens", &m.seq_lens);
                positive("batch_sizes", &m.batch_sizes);
                if m.cache_kinds.is_empty() {
                    out.push(empty_kinds());
                }
            }
            Self::Accuracy(a) => {
                if a.tasks.is_empty() {
                    out.push(SpecProblem {
                        field: "tasks".into(),
                        message: "no task files".into(),
                        help: "e.g. `tasks: [benches/tasks/python_basics.jsonl]`".into(),
                    });
                }
                if a.limit == Some(0) {
                    out.push(SpecProblem {
                        field: "limit".into(),
                        message: "must be at least 1".into(),
                        help: "leave it out to score every question".into(),
                    });
                }
            }
            Self::Generation(g) => {
                positive("max_new_tokens", &[g.max_new_tokens]);
                if g.prompts.trim().is_empty() {
                    out.push(SpecProblem {
                        field: "prompts".into(),
                        message: "the prompts path is empty".into(),
                        help: "a text file with one prompt per line, or JSONL".into(),
                    });
                }
            }
            Self::Behavior(b) => {
                if b.suite.trim().is_empty() {
                    out.push(SpecProblem {
                        field: "suite".into(),
                        message: "the suite path is empty".into(),
                        help: "a YAML file with `cases: [...]`".into(),
                    });
                }
            }
        }
        out
    }
}

/// `the held-out data`, a path, or `sets in_domain, out_of_domain (data/x.npy)`.
fn describe_sets(p: &PerplexityBench) -> String {
    if p.sets.is_empty() {
        return p.data.clone().unwrap_or_else(|| "the held-out data".into());
    }
    let names: Vec<String> = p
        .sets
        .iter()
        .map(|s| match &s.data {
            Some(d) => format!("{} ({})", s.name, d.path),
            None => format!("{} (held-out data)", s.name),
        })
        .collect();
    format!("sets {}", names.join(", "))
}

/// Problems of `sets:`: names present and unique, paths present, `prepare:` writing a .npy.
fn set_problems(p: &PerplexityBench) -> Vec<SpecProblem> {
    let mut out = Vec::new();
    let mut problem = |field: String, message: String, help: &str| {
        out.push(SpecProblem {
            field,
            message,
            help: help.into(),
        })
    };
    if p.data.is_some() && !p.sets.is_empty() {
        problem(
            "data".into(),
            "`data:` and `sets:` cannot be given together".into(),
            "move the file into `sets:` as `{name: …, data: {path: …}}`",
        );
    }
    for (i, set) in p.sets.iter().enumerate() {
        let at = |rest: &str| format!("sets[{i}].{rest}");
        if set.name.trim().is_empty() {
            problem(
                at("name"),
                "the set name is empty".into(),
                "e.g. `name: out_of_domain`",
            );
        } else if let Some(j) = p.sets[..i].iter().position(|s| s.name == set.name) {
            problem(
                at("name"),
                format!("set name `{}` is used twice (also by sets[{j}])", set.name),
                "set names label the results; make them unique",
            );
        }
        let Some(data) = &set.data else { continue };
        if data.path.trim().is_empty() {
            problem(
                at("data.path"),
                "the data path is empty".into(),
                "a .npy token file, or a text file",
            );
        }
        if data.tokenizer.as_deref().is_some_and(|t| t.trim().is_empty()) {
            problem(
                at("data.tokenizer"),
                "the tokenizer is empty".into(),
                "`teacher`, `bytes`, or a tokenizer.json path; leave it out for the target's",
            );
        }
        if let Some(prep) = &data.prepare {
            if !data.path.ends_with(".npy") {
                problem(
                    at("data.path"),
                    format!(
                        "`prepare:` writes a .npy token file, but the path is `{}`",
                        data.path
                    ),
                    "name the token file `….npy`",
                );
            }
            if prep.input.is_empty() {
                problem(
                    at("data.prepare.input"),
                    "`prepare` needs at least one input glob".into(),
                    "e.g. `input: [\"usr/share/doc/foo/*.txt\"]`",
                );
            }
        }
    }
    out
}

fn empty_kinds() -> SpecProblem {
    SpecProblem {
        field: "cache_kinds".into(),
        message: "the list is empty".into(),
        help: "one or more of fp32, fp16, bf16, q8_0, q4_0, nf4".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_every_field() {
        let spec: BenchmarkSpec =
            serde_json::from_value(serde_json::json!({"kind": "latency"})).expect("valid");
        let BenchmarkSpec::Latency(l) = spec else {
            panic!("latency")
        };
        assert_eq!(
            (l.prompt_lens, l.gen_lens, l.batch_sizes),
            (vec![128], vec![32], vec![1])
        );
        assert_eq!((l.warmup, l.runs, l.cache_kinds), (1, 3, vec![CacheKind::Fp32]));
    }

    #[test]
    fn unknown_fields_and_kinds_are_rejected() {
        let e =
            serde_json::from_value::<BenchmarkSpec>(serde_json::json!({"kind": "memory", "seqlens": [1]}))
                .expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `seqlens`"), "{e}");
        let e =
            serde_json::from_value::<BenchmarkSpec>(serde_json::json!({"kind": "speed"})).expect_err("kind");
        assert!(e.to_string().contains("unknown variant `speed`"), "{e}");
    }

    #[test]
    fn zero_lengths_are_problems() {
        let spec: BenchmarkSpec = serde_json::from_value(
            serde_json::json!({"kind": "latency", "prompt_lens": [0, 4], "gen_lens": []}),
        )
        .expect("parses");
        let fields: Vec<_> = spec.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["prompt_lens", "gen_lens"]);
    }
}
