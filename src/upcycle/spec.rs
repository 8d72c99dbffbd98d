//! Manifest settings of an upcycle target (`trainer: upcycle`) and the phase of each run.

use serde::{Deserialize, Serialize};

use super::DbaInit;
use super::blockwise::BlockInput;
use crate::bench::eval_cases::{EvalCase, EvalOptions};

fn default_max_new_tokens() -> usize {
    EvalOptions::default().max_new_tokens
}
use super::global::GlobalSpec;

/// What a run of an upcycle target trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Per attention layer, only that layer trains, to match the teacher's attention output.
    Blockwise,
    /// The whole student (or only its attention) on next-token cross-entropy.
    #[default]
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DistillLoss {
    /// Mean absolute difference of attention outputs.
    #[default]
    L1,
    /// Mean squared difference.
    Mse,
}

/// The `upcycle:` block of a target. Every field has a default.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpcycleSpec {
    /// How DBA projections start: `aligned` (head-aligned pairs + principal bases; default),
    /// `svd` (the original's version B), `random`, `fresh`.
    pub dba_init: DbaInit,
    /// Batches of training data whose attention inputs make the surgery activation-aware
    /// (0: data-free, with the pre-norm gains standing in for the input covariance). Default: 2.
    pub calibration_batches: usize,
    /// Blockwise loss between student and teacher attention outputs. Default: l1.
    pub distill_loss: DistillLoss,
    /// What feeds the layer a blockwise phase trains: `student` (its own distilled prefix;
    /// default) or `teacher` (the teacher's hidden states, cached with its outputs).
    pub blockwise_input: BlockInput,
    /// Distinct batches whose teacher outputs are computed once and reused by every block
    /// (blockwise steps cycle through them). Default: 8.
    pub teacher_batches: usize,
    /// Held-out batches for verification (attention/logit L1, perplexity). Default: 8.
    pub verify_batches: usize,
    /// Prompt lengths of the decode-latency benchmark (teacher and student, interleaved); empty
    /// skips it. Default: [64, 256].
    pub latency_prompt_lens: Vec<usize>,
    /// Greedy tokens generated per latency run. Default: 16.
    pub latency_gen_len: usize,
    /// Timed runs per latency point (after one warm-up run). Default: 3.
    pub latency_runs: usize,
    /// Loss and trained parameters of the global phases. Default: cross-entropy, all parameters.
    pub global: GlobalSpec,
}

impl Default for UpcycleSpec {
    fn default() -> Self {
        Self {
            dba_init: DbaInit::Aligned,
            calibration_batches: 2,
            distill_loss: DistillLoss::L1,
            blockwise_input: BlockInput::Student,
            teacher_batches: 8,
            verify_batches: 8,
            latency_prompt_lens: vec![64, 256],
            latency_gen_len: 16,
            latency_runs: 3,
            global: GlobalSpec::default(),
        }
    }
}

/// L1 limits of a `compare` check. Unset limits are not checked.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct L1Limits {
    /// Largest allowed mean |teacher − student| (per layer for attention).
    #[serde(default)]
    pub max_mean_l1: Option<f64>,
    /// Largest allowed max |teacher − student|.
    #[serde(default)]
    pub max_max_l1: Option<f64>,
}

/// A check after a run of an upcycle target (`verify:` on the run: one mapping or a list).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum VerifySpec {
    /// Per-layer attention outputs and final logits of teacher and student on held-out batches.
    Compare {
        #[serde(default)]
        attention: Option<L1Limits>,
        #[serde(default)]
        logits: Option<L1Limits>,
        /// Stop the target (exit 1) when a limit is exceeded. Default: false (record and go on).
        #[serde(default)]
        fail_fast: bool,
    },
    /// Held-out next-token quality of the student relative to the teacher.
    Fidelity {
        /// Largest allowed student/teacher perplexity ratio.
        #[serde(default)]
        max_ppl_ratio: Option<f64>,
        /// Largest allowed student − teacher mean NLL (nats).
        #[serde(default)]
        max_delta_nll: Option<f64>,
        #[serde(default)]
        fail_fast: bool,
    },
    /// Behavioural cases scored on teacher and student (`src/bench/eval_cases.rs`).
    Eval {
        cases: Vec<EvalCase>,
        /// Greedy tokens per generated answer. Default: 16.
        #[serde(default = "default_max_new_tokens")]
        max_new_tokens: usize,
        /// Render prompts through the tokenizer's chat template. Default: false.
        #[serde(default)]
        chat: bool,
        /// Accuracy limits. Unset limits are not checked.
        #[serde(default)]
        thresholds: EvalThresholds,
        #[serde(default)]
        fail_fast: bool,
    },
    /// KV-cache bytes per token, teacher / student, at equal precision.
    Kvcache {
        min_reduction: f64,
        #[serde(default)]
        fail_fast: bool,
    },
}

/// Limits of an `eval` check (the original's `thresholds:`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalThresholds {
    /// Smallest allowed student accuracy, in [0, 1].
    #[serde(default)]
    pub min_student_accuracy: Option<f64>,
    /// Largest allowed teacher − student accuracy, in [0, 1].
    #[serde(default)]
    pub max_accuracy_drop: Option<f64>,
}

/// A problem in a `verify:` value: `path` below `verify` (`[1].cases[2].answer`; empty for the
/// value itself) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyError {
    pub path: String,
    pub message: String,
}

impl VerifyError {
    /// The full manifest path of the problem under `parent` (the run's `verify` key).
    pub fn under(&self, parent: &str) -> String {
        match self.path.chars().next() {
            None => parent.to_string(),
            Some('[') => format!("{parent}{}", self.path),
            Some(_) => format!("{parent}.{}", self.path),
        }
    }
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(
                f,
                "verify{}{}: {}",
                if self.path.starts_with('[') { "" } else { "." },
                self.path,
                self.message
            )
        }
    }
}

/// Parse a run's `verify:` value (one mapping or a list of them).
pub fn parse_verify(value: &serde_json::Value) -> Result<Vec<VerifySpec>, VerifyError> {
    let (list, indexed) = match value {
        serde_json::Value::Array(items) => (items.clone(), true),
        other => (vec![other.clone()], false),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| parse_check(v, if indexed { format!("[{i}]") } else { String::new() }))
        .collect()
}

fn parse_check(v: serde_json::Value, at: String) -> Result<VerifySpec, VerifyError> {
    let below = |rel: &str| match (at.is_empty(), rel.is_empty()) {
        (_, true) => at.clone(),
        (true, false) => rel.to_string(),
        (false, false) if rel.starts_with('[') => format!("{at}{rel}"),
        (false, false) => format!("{at}.{rel}"),
    };
    // why: serde's tagged enums buffer their content and lose the field path; cases are parsed
    // one by one first so that a bad case is reported at its own line.
    if v.get("type").and_then(|t| t.as_str()) == Some("eval") {
        match v.get("cases") {
            Some(serde_json::Value::Array(cases)) if !cases.is_empty() => {
                for (j, case) in cases.iter().enumerate() {
                    EvalCase::parse(case).map_err(|e| VerifyError {
                        path: below(&match e.path.as_str() {
                            "" => format!("cases[{j}]"),
                            p => format!("cases[{j}].{p}"),
                        }),
                        message: e.message,
                    })?;
                }
            }
            _ => {
                return Err(VerifyError {
                    path: below("cases"),
                    message: "an eval check needs a non-empty list of `cases`".into(),
                });
            }
        }
        if let Some(t) = v.get("thresholds").and_then(|t| t.as_object()) {
            for key in ["min_student_accuracy", "max_accuracy_drop"] {
                if let Some(x) = t.get(key).and_then(|x| x.as_f64())
                    && !(0.0..=1.0).contains(&x)
                {
                    return Err(VerifyError {
                        path: below(&format!("thresholds.{key}")),
                        message: format!("{x} is not an accuracy in [0, 1]"),
                    });
                }
            }
        }
    }
    serde_json::from_value(v).map_err(|e| VerifyError {
        path: at.clone(),
        message: e.to_string(),
    })
}
