//! The original's benchmark form, `{id, config: {type, …}, models: [teacher, student], repeats}`,
//! rewritten into today's `{kind, …}` with today's field names.

use serde_json::{Map, Value};

use super::{Rewriter, as_count, is_off};
use crate::manifest::load::join_key;

/// `(kind, [(the original's field, today's field)])`: renamed fields of each benchmark kind.
pub const BENCHMARK_FIELDS: &[(&str, &[(&str, &str)])] = &[
    ("perplexity", &[("dataset", "data"), ("num_batches", "blocks")]),
    (
        "latency",
        &[
            ("prompt_lengths", "prompt_lens"),
            ("generation_lengths", "gen_lens"),
            ("warmup_runs", "warmup"),
            ("timed_runs", "runs"),
        ],
    ),
    (
        "memory",
        &[
            ("sequence_lengths", "seq_lens"),
            ("quantization_modes", "cache_kinds"),
        ],
    ),
    ("accuracy", &[]),
    ("generation", &[("prompts_file", "prompts")]),
    ("behavior", &[("cases_file", "suite")]),
];

/// The original's fields that mean nothing different here (dropped without a word): each says why.
const NO_OPS: &[(&str, &str)] = &[
    // why: the original never read it (its windows started one token apart).
    ("perplexity", "stride"),
    // why: caramba always measures the KV bytes; the peak is `measure`.
    ("memory", "measure_kvcache"),
];

impl Rewriter<'_> {
    /// One `benchmarks[j]` entry of a target.
    pub(super) fn benchmark(&mut self, b: &mut Map<String, Value>, path: &str, upcycle: bool) {
        // `type:` (some v2 files) is today's `kind:`.
        if !b.contains_key("kind")
            && !b.contains_key("config")
            && let Some(t) = b.remove("type")
        {
            self.moved(&join_key(path, "type"), &join_key(path, "kind"));
            b.insert("kind".into(), t);
        }
        let Some(config) = b.remove("config") else {
            return;
        };
        let cpath = join_key(path, "config");
        let Value::Object(mut config) = config else {
            b.insert("config".into(), config);
            return;
        };
        b.remove("id");
        if let Some(models) = b.remove("models") {
            let names: Vec<&str> = models
                .as_array()
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let all = upcycle && names.contains(&"teacher") && names.contains(&"student");
            if !all {
                self.warn(
                    &join_key(path, "models"),
                    format!(
                        "`models: {models}` is ignored: caramba measures every model of the target (the teacher and the student of an upcycle, each run's model otherwise)"
                    ),
                );
            }
        }
        if let Some(r) = b.remove("repeats")
            && as_count(&r).is_some_and(|n| n > 1)
        {
            self.warn(
                &join_key(path, "repeats"),
                "`repeats:` is ignored: latency has its own timed `runs`, and perplexity and memory are deterministic",
            );
        }
        let Some(Value::String(kind)) = config.remove("type") else {
            self.err(
                &join_key(&cpath, "type"),
                "the benchmark's config names no `type`",
                "one of perplexity, latency, memory, accuracy, generation, behavior",
            );
            return;
        };
        self.moved(&join_key(&cpath, "type"), &join_key(path, "kind"));
        b.insert("kind".into(), Value::String(kind.clone()));
        let renames = BENCHMARK_FIELDS
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, r)| *r)
            .unwrap_or(&[]);
        for (key, value) in config {
            let from = join_key(&cpath, &key);
            if NO_OPS.iter().any(|(k, f)| *k == kind && *f == key) {
                continue;
            }
            let Some(value) = self.bench_field(&kind, &key, value, &from) else {
                continue;
            };
            let (new_key, value) = match (kind.as_str(), key.as_str()) {
                ("latency", "cache_kind") => ("cache_kinds".to_string(), Value::Array(vec![value])),
                ("memory", "measure_peak") => ("measure".to_string(), value),
                _ => (
                    renames
                        .iter()
                        .find(|(old, _)| *old == key)
                        .map_or(key.clone(), |(_, new)| new.to_string()),
                    value,
                ),
            };
            let to = join_key(path, &new_key);
            self.moved(&from, &to);
            if b.contains_key(&new_key) {
                self.err(
                    &from,
                    format!("`{new_key}` is written twice (in the benchmark and in its `config:`)"),
                    "keep one",
                );
            } else {
                b.insert(new_key, value);
            }
        }
    }

    /// A field of the original's config that may ask for something else here: `None` drops it.
    fn bench_field(&mut self, kind: &str, key: &str, value: Value, at: &str) -> Option<Value> {
        match (kind, key) {
            ("perplexity", "batch_size") => {
                if as_count(&value) != Some(1) {
                    self.warn(
                        at,
                        "`batch_size` is ignored: perplexity windows are scored one at a time",
                    );
                }
                None
            }
            ("latency", "use_cache") => {
                if is_off(&value) {
                    self.err(
                        at,
                        "`use_cache: false` (re-running the whole context every step) is not measured here",
                        "leave `use_cache` out: caramba decodes through the KV cache, whose storage `cache_kinds` picks",
                    );
                }
                None
            }
            ("latency", "cache_policy") => {
                self.warn(
                    at,
                    "`cache_policy` is ignored: list the storages to measure in `cache_kinds`",
                );
                None
            }
            ("accuracy", "num_fewshot") => {
                if !is_off(&value) {
                    self.err(
                        at,
                        "few-shot prompting is not built in",
                        "put the examples into each task's prompt, and leave `num_fewshot` out",
                    );
                }
                None
            }
            ("generation", "temperature" | "top_p" | "repetition_penalty") => {
                self.warn(
                    at,
                    format!("`{key}` is ignored: the generation benchmark decodes greedily"),
                );
                None
            }
            ("behavior", "tokenizer" | "max_new_tokens" | "context_window") => {
                self.warn(
                    at,
                    format!("`{key}` is ignored: a behavior suite uses the models' own tokenizer and its cases' own settings"),
                );
                None
            }
            ("context" | "behavioral_v2", _) => None,
            _ => Some(value),
        }
    }
}
