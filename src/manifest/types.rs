//! The typed manifest: what the user wrote, after `${var}` substitution. Every struct rejects
//! unknown fields; optional fields are `Option` or defaulted, and lowering fills them.
//!
//! ```yaml
//! version: 2
//! name: tiny
//! defaults: {data: {tokenizer: bytes, val_frac: 0.1}, runtime: {seed: 1337}, logging: {log_every: 10}}
//! model: {type: TransformerModel, embedder: {type: token, vocab_size: 256, d_model: 64}, topology: {...}}
//! targets:
//!   - name: quick
//!     data: {path: data/tiny.npy, block_size: 64}
//!     runs: [{id: train, seed: [1, 2], steps: 300}]
//! entrypoints: {default: quick}
//! ```
//! The full schema with every default is in docs/manifests.md.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::components::{MetricKind, ObjectiveKind, SystemKind};
use crate::data::TargetData;
use crate::instrument::InstrumentKind;
use crate::model::ModelSpec;
use crate::train::TrainSpec;

/// A whole manifest.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema version: 1 (the early `groups` form) or 2.
    pub version: u32,
    /// Experiment name; runs go to `runs/<name>/…`. Default: the file name without its suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text. Default: empty.
    #[serde(default)]
    pub notes: String,
    /// Settings every target and run inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// The model of every target that has no `model:` of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// Experiments, in the order `caramba run` without `--target` runs them (alias: `groups`).
    #[serde(alias = "groups")]
    pub targets: Vec<Target>,
    /// Names for targets: `{default: quick, fast: "target:quick"}`. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entrypoints: BTreeMap<String, String>,
    /// The process targets (`type: process` entries of `targets:`, agents — see
    /// [`crate::agents`]), in order; the parser takes them out of `targets` and puts them here,
    /// each knowing its position in the file. Not part of the lowered YAML (experiment run
    /// directories store that); a process's run directory stores its own `process.json`.
    #[serde(skip)]
    pub processes: Vec<crate::agents::ProcessTarget>,
}

impl Manifest {
    /// Where `targets[i]` (an experiment) was written in the file's `targets:` list, counting
    /// the process targets the parser took out.
    pub fn written_index(&self, i: usize) -> usize {
        (0..)
            .filter(|k| !self.processes.iter().any(|p| p.index == *k))
            .nth(i)
            .unwrap_or(i)
    }
}

/// `defaults:`: values inherited by every target (`data`) and run (`runtime`, `logging`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub data: DataDefaults,
    #[serde(default)]
    pub runtime: RuntimeDefaults,
    #[serde(default)]
    pub logging: LoggingDefaults,
}

/// `defaults.data`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataDefaults {
    /// Tokenizer of every target's data. Default: `bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Held-out fraction of every target's data. Default: 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_frac: Option<f64>,
}

/// `defaults.runtime`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeDefaults {
    /// Checkpoint interval of every run. Default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_every: Option<usize>,
    /// Seed of every run without `seed:`. Default: 1337.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Device of every run whose `train:` names none (`cpu`, `cuda`, `cuda:N`, `metal`). Default: cpu.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Dtype of every run whose `train:` names none (`f32`, `bf16`, `f16`). Default: f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

/// `defaults.logging`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingDefaults {
    /// Metrics line interval of every run. Default: 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_every: Option<usize>,
    /// Batches per eval of every run. Default: 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_iters: Option<usize>,
    /// Eval interval of every run. Default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// Extra sinks of every run's scalars and events: a list (`[tensorboard, live]`) or the
    /// original's string (`"rich tb+live"`); see [`crate::instrument`]. `events.jsonl` and the
    /// console lines are always on. Default: none besides those.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::instrument::deserialize_optional_list"
    )]
    pub instrument: Option<Vec<InstrumentKind>>,
}

/// The kind of an experiment target (process targets, `type: process`, are
/// [`crate::agents::ProcessTarget`]s, which the parser keeps apart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Train (and later verify and benchmark) a model.
    #[default]
    Experiment,
}

/// How a target's runs train.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainerKind {
    /// From scratch, next-token cross-entropy (the original's `trainer.standard` / `trainer.train`).
    #[default]
    #[serde(alias = "trainer.standard", alias = "trainer.train")]
    Standard,
    /// Teacher → student surgery and distillation.
    #[serde(alias = "trainer.upcycle")]
    Upcycle,
    /// The standard trainer under the orchestrator (`train.orchestrator:` with its defaults
    /// where a run sets none; see docs/training.md).
    #[serde(alias = "trainer.orchestrated")]
    Orchestrated,
}

impl TrainerKind {
    /// Standard or orchestrated: a model trained from its own weights on next-token loss.
    pub fn from_scratch(self) -> bool {
        matches!(self, Self::Standard | Self::Orchestrated)
    }
}

impl fmt::Display for TrainerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Standard => "standard",
            Self::Upcycle => "upcycle",
            Self::Orchestrated => "orchestrated",
        })
    }
}

/// One experiment: a model, its data, and the runs that train it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Unique name (`--target NAME`).
    pub name: String,
    /// Default: experiment.
    #[serde(rename = "type", default)]
    pub kind: TargetKind,
    /// Free text. Default: empty.
    #[serde(default)]
    pub description: String,
    /// This target's model. Default: the top-level `model:` (lowering copies it here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// What is trained. Default: language_model.
    #[serde(default, skip_serializing_if = "SystemKind::is_language_model")]
    pub system: SystemKind,
    /// Its data: token files (language models) or `type: npy_supervised` arrays (classifiers).
    pub data: TargetData,
    /// The training loss. Default: the system's (`next_token_ce`, `classification_ce`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<ObjectiveKind>,
    /// What to measure on held-out data. Default: the system's (`[loss]`; classifiers
    /// `[loss, accuracy, per_class_accuracy]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<MetricKind>>,
    /// Default: standard.
    #[serde(default)]
    pub trainer: TrainerKind,
    /// Upcycle only: the pretrained model (any model source: a path, `hf:org/name`, a known
    /// name such as `smollm2-135m`, a run directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
    /// Upcycle only: surgery and distillation settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcycle: Option<crate::upcycle::UpcycleSpec>,
    /// Runs, in order.
    pub runs: Vec<Run>,
    /// Benchmarks after the runs, on every model of the target (see [`crate::bench::spec`]).
    /// Default: empty (an upcycle then measures what its `upcycle:` block says).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub benchmarks: Vec<crate::bench::BenchmarkSpec>,
}

/// One run of a target: training (the default), or sampling from / chatting with a trained model.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// Unique within the target; a seed list appends `__s<seed>`.
    pub id: String,
    /// What the run does: `train` (default), `sample`/`generate` (continue a prompt), `chat`.
    #[serde(default, skip_serializing_if = "RunMode::is_train")]
    pub mode: RunMode,
    /// The original's experiment label (`baseline`, `gqa`, `bottleneck`, `decoupled`): recorded
    /// in the plan; `caramba --exp X` picks the runs labelled X. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<String>,
    /// What the run's model must be, checked by validation: `attn_mode` (`standard`, `gqa`,
    /// `decoupled`) is the mode of every attention layer. Default: nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expected: BTreeMap<String, Value>,
    /// One seed, or a list (one run per seed). Default: `defaults.runtime.seed`, else 1337.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Seeds>,
    /// Optimizer steps (> 0 for `mode: train`); in a blockwise phase, steps per attention layer.
    /// Sampling and chat runs take none. Default: 0.
    #[serde(default)]
    pub steps: usize,
    /// Sampling and chat only: the model to load (any model source). Default: the run directory
    /// of the nearest training run above it in the target, else its own run directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ckpt: Option<String>,
    /// Sampling and chat only: prompt and sampling settings. Every field has a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<RunGenerate>,
    /// Upcycle only: `blockwise` or `global`. Default: global.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::upcycle::Phase>,
    /// Optimizer, schedule, batch, device. Every field has a default.
    #[serde(default)]
    pub train: TrainSpec,
    /// Upcycle only: checks after the run — `compare`, `fidelity`, `eval`, `kvcache` (one or a list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Value>,
}

/// What a run does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// Train the target's model (the original's `mode: train`).
    #[default]
    Train,
    /// Load a trained model and continue `generate.prompt`, printing the text.
    #[serde(alias = "generate")]
    Sample,
    /// Load a trained model and talk with it, one message per line of stdin.
    Chat,
}

impl RunMode {
    pub fn is_train(&self) -> bool {
        *self == Self::Train
    }
}

impl fmt::Display for RunMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Train => "train",
            Self::Sample => "sample",
            Self::Chat => "chat",
        })
    }
}

/// `generate:` of a sampling or chat run (the original's `GenerateConfig` fields).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunGenerate {
    /// Text to continue (sampling). Default: a newline.
    pub prompt: String,
    /// Most tokens per answer. Default: 128.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy. Default: 0.8.
    pub temperature: f64,
    /// Sample among the k most likely tokens. Default: all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Nucleus sampling: the most likely tokens that reach probability p. Default: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Penalise tokens already in the sequence (1.0 = off). Default: 1.0.
    pub repetition_penalty: f64,
    /// A token id that ends generation, besides the tokenizer's own. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
    /// Longest sequence (prompt + answer) kept. Default: the model's context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seq_len: Option<usize>,
    /// KV cache storage: `fp32`, `fp16`, `bf16`, `q8_0` (`q8`), `q4_0` (`q4`), `nf4`, or `auto`
    /// (measured, see docs/inference.md). Default: the plain f32 cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_kind: Option<String>,
    /// With `cache_kind: auto`: most megabytes the KV cache may take at the model's context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_budget_mb: Option<f64>,
}

impl Default for RunGenerate {
    fn default() -> Self {
        Self {
            prompt: "\n".into(),
            max_new_tokens: 128,
            temperature: 0.8,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            eos_token_id: None,
            max_seq_len: None,
            cache_kind: None,
            cache_budget_mb: None,
        }
    }
}

/// `seed: 7` or `seed: [1, 2, 7]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Seeds {
    One(u64),
    Many(Vec<u64>),
}

impl<'de> Deserialize<'de> for Seeds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SeedsVisitor;
        impl<'de> Visitor<'de> for SeedsVisitor {
            type Value = Seeds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a seed (a non-negative integer) or a list of seeds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seeds, E> {
                Ok(Seeds::One(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seeds, E> {
                u64::try_from(v)
                    .map(Seeds::One)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seeds, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<u64>()? {
                    out.push(s);
                }
                Ok(Seeds::Many(out))
            }
        }
        d.deserialize_any(SeedsVisitor)
    }
}
