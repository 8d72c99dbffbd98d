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
    /// (0: data-free). Default: 2.
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
