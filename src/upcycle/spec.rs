//! Manifest settings of an upcycle target (`trainer: upcycle`) and the phase of each run.

use serde::{Deserialize, Serialize};

use super::DbaInit;

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
}

impl Default for UpcycleSpec {
    fn default() -> Self {
        Self {
            dba_init: DbaInit::Aligned,
            calibration_batches: 2,
            distill_loss: DistillLoss::L1,
            teacher_batches: 8,
            verify_batches: 8,
            latency_prompt_lens: vec![64, 256],
            latency_gen_len: 16,
            latency_runs: 3,
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
    /// KV-cache bytes per token, teacher / student, at equal precision.
    Kvcache {
        min_reduction: f64,
        #[serde(default)]
        fail_fast: bool,
    },
}

/// Parse a run's `verify:` value (one mapping or a list of them).
pub fn parse_verify(value: &serde_json::Value) -> Result<Vec<VerifySpec>, String> {
    let list = match value {
        serde_json::Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| serde_json::from_value(v).map_err(|e| format!("check {i}: {e}")))
        .collect()
}
