//! The executable plan: a lowered manifest as an ordered list of work, with no defaults left to
//! decide. Order: targets (declaration order) → runs (declaration order, seed lists expanded) →
//! each run's verify steps → the target's benchmarks.
//!
//! Benchmarks are typed ([`crate::bench::BenchmarkSpec`], every default filled by serde).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::memory::TrainingMemory;
use super::stats::ModelStats;
use crate::data::TargetData;
use crate::manifest::lower::{DEFAULT_SEED, DEFAULT_TOKENIZER, DEFAULT_VAL_FRAC};
use crate::manifest::validate::strip_kind;
use crate::manifest::{
    Manifest, MetricKind, ObjectiveKind, RunGenerate, RunMode, Seeds, SystemKind, TargetKind, TrainerKind,
};
use crate::model::ModelSpec;
use crate::train::TrainSpec;

/// Everything `caramba run` will do, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Experiment name (`runs/<name>/…`).
    pub name: String,
    /// Manifest schema version.
    pub version: u32,
    /// Targets in declaration order.
    pub targets: Vec<TargetPlan>,
    /// Entry point → target name.
    pub entrypoints: BTreeMap<String, String>,
    /// The target `run` picks without `--target`: `entrypoints.default`, else the first
    /// experiment, else the first process.
    pub default_target: String,
    /// Process targets (agents), in order, as written (serde fills every default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<crate::agents::ProcessTarget>,
}

/// One target: its model, data and runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetPlan {
    pub name: String,
    pub kind: TargetKind,
    pub description: String,
    pub trainer: TrainerKind,
    /// What is trained (default: language_model).
    #[serde(default, skip_serializing_if = "SystemKind::is_language_model")]
    pub system: SystemKind,
    /// The training loss.
    pub objective: ObjectiveKind,
    /// What is measured on held-out data.
    pub metrics: Vec<MetricKind>,
    /// Where the model was written: `model` (shared) or `targets[i].model`.
    pub model_path: String,
    /// The lowered model (every `repeat` expanded).
    pub model: ModelSpec,
    pub stats: ModelStats,
    /// Data (tokens: with tokenizer and val_frac filled in).
    pub data: TargetData,
    pub runs: Vec<RunPlan>,
    /// Upcycle only: the teacher's model source.
    pub teacher: Option<String>,
    /// Upcycle settings (defaults filled in).
    pub upcycle: crate::upcycle::UpcycleSpec,
    /// Benchmarks after all runs, on every model of the target.
    pub benchmarks: Vec<crate::bench::BenchmarkSpec>,
}

/// One training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    /// Unique within the target (`train`, or `train__s7` from a seed list).
    pub id: String,
    /// Train (default), or sample from / chat with a trained model.
    #[serde(default, skip_serializing_if = "RunMode::is_train")]
    pub mode: RunMode,
    /// The original's experiment label, when the run has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<String>,
    /// Sampling and chat: the model source named by `ckpt:` (else the target's training run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ckpt: Option<String>,
    /// Sampling and chat: prompt and sampling settings (defaults filled in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<RunGenerate>,
    pub seed: u64,
    pub steps: usize,
    /// Train settings with `save_every` filled in.
    pub train: TrainSpec,
    /// Upcycle only: blockwise or global.
    pub phase: crate::upcycle::Phase,
    /// Checks after the run (upcycle targets: compare, fidelity, eval, kvcache).
    pub verify: Vec<Value>,
    /// Memory the run needs at the least (see [`super::memory`]).
    pub memory: TrainingMemory,
}

impl Plan {
    /// The plan of a lowered (and validated) manifest.
    pub fn from_lowered(m: &Manifest) -> Self {
        let targets: Vec<TargetPlan> = m
            .targets
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                // why: lowering gives every target a model; validation rejects targets without one.
                let (model_path, model) = match (&t.model, &m.model) {
                    (Some(own), Some(top)) if own == top => ("model".to_string(), own),
                    (Some(own), _) => (format!("targets[{}].model", m.written_index(i)), own),
                    (None, Some(top)) => ("model".to_string(), top),
                    (None, None) => return None,
                };
                let mut data = t.data.clone();
                if let Some(d) = data.tokens_mut() {
                    d.tokenizer.get_or_insert_with(|| DEFAULT_TOKENIZER.into());
                    d.val_frac.get_or_insert(DEFAULT_VAL_FRAC);
                }
                let runs = t
                    .runs
                    .iter()
                    .flat_map(|r| {
                        let seeds = match &r.seed {
                            Some(Seeds::One(s)) => vec![(r.id.clone(), *s)],
                            Some(Seeds::Many(ss)) => {
                                ss.iter().map(|s| (format!("{}__s{s}", r.id), *s)).collect()
                            }
                            None => vec![(r.id.clone(), DEFAULT_SEED)],
                        };
                        let memory = TrainingMemory::estimate(model, &r.train, t.data.block_size());
                        seeds.into_iter().map(move |(id, seed)| RunPlan {
                            id,
                            mode: r.mode,
                            exp: r.exp.clone(),
                            ckpt: r.ckpt.clone(),
                            generate: (!r.mode.is_train()).then(|| r.generate.clone().unwrap_or_default()),
                            seed,
                            steps: r.steps,
                            train: r.train.clone(),
                            phase: r.phase.unwrap_or_default(),
                            verify: r.verify.iter().cloned().collect(),
                            memory,
                        })
                    })
                    .collect();
                Some(TargetPlan {
                    name: t.name.clone(),
                    kind: t.kind,
                    description: t.description.clone(),
                    trainer: t.trainer,
                    system: t.system,
                    objective: t.objective.unwrap_or_else(|| t.system.default_objective()),
                    metrics: t.metrics.clone().unwrap_or_else(|| t.system.default_metrics()),
                    model_path,
                    model: model.clone(),
                    stats: ModelStats::of(model),
                    data,
                    runs,
                    teacher: t.teacher.clone(),
                    upcycle: t.upcycle.clone().unwrap_or_default(),
                    benchmarks: t.benchmarks.clone(),
                })
            })
            .collect();
        let entrypoints: BTreeMap<String, String> = m
            .entrypoints
            .iter()
            .filter_map(|(k, v)| strip_kind(v).ok().map(|name| (k.clone(), name.to_string())))
            .collect();
        let default_target = entrypoints
            .get("default")
            .cloned()
            .or_else(|| targets.first().map(|t| t.name.clone()))
            .or_else(|| m.processes.first().map(|p| p.name.clone()))
            .unwrap_or_default();
        Self {
            name: m.name.clone().unwrap_or_default(),
            version: m.version,
            targets,
            entrypoints,
            default_target,
            processes: m.processes.clone(),
        }
    }

    /// The target called `name`.
    pub fn target(&self, name: &str) -> Option<&TargetPlan> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// Number of runs over all targets.
    pub fn run_count(&self) -> usize {
        self.targets.iter().map(|t| t.runs.len()).sum()
    }
}
