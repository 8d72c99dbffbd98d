//! The `train:` block of a run: optimizer, schedule, batch and checkpointing settings.

use serde::{Deserialize, Serialize};

use super::orchestrator::OrchestratorSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW with decoupled weight decay (Loshchilov & Hutter).
    #[default]
    Adamw,
    /// SGD with (optional) momentum.
    Sgd,
    /// Lion (Chen et al. 2023), the published update.
    Lion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Warmup, then cosine decay to `min_lr_ratio · lr` at the last step.
    #[default]
    Cosine,
    /// Warmup, then linear decay to `min_lr_ratio · lr` at the last step.
    Linear,
    /// Warmup, then constant `lr`.
    Constant,
}

/// Every field has a default; the manifest overrides what it names.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    /// Sequences per micro-batch. Default: 16.
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step. Default: 1.
    pub grad_accum: usize,
    /// Peak learning rate. Default: 3e-4.
    pub lr: f64,
    /// Default: adamw.
    pub optimizer: OptimizerKind,
    /// (β1, β2). Default: [0.9, 0.95] (Lion: use e.g. [0.9, 0.99]).
    pub betas: [f64; 2],
    /// AdamW ε. Default: 1e-8.
    pub eps: f64,
    /// Decoupled weight decay (AdamW, Lion) or L2 (SGD). Default: 0.1.
    pub weight_decay: f64,
    /// SGD momentum. Default: 0.9.
    pub momentum: f64,
    /// Default: cosine.
    pub schedule: ScheduleKind,
    /// Linear warmup steps. Default: 0.
    pub warmup_steps: usize,
    /// Final lr as a fraction of `lr` (cosine, linear). Default: 0.1.
    pub min_lr_ratio: f64,
    /// Global-norm gradient clipping; 0 disables. Default: 1.0.
    pub grad_clip: f64,
    /// Eval loss every N steps (and at the end); 0 disables. Default: 100.
    pub eval_every: usize,
    /// Batches per eval. Default: 10.
    pub eval_iters: usize,
    /// Checkpoint every N steps (and at the end); 0: only at the end. Default: `defaults.runtime.save_every`, else 100.
    pub save_every: Option<usize>,
    /// Complete checkpoints kept in the run directory (older ones are deleted). Default: 2.
    pub keep_checkpoints: usize,
    /// Log a metrics line every N steps. Default: 10.
    pub log_every: usize,
    /// `cpu`, `cuda`, `cuda:N`, `metal`. Default: cpu.
    pub device: String,
    /// `f32`, `bf16`, `f16`. Default: f32.
    pub dtype: String,
    /// Training attention through the fused flash-attention kernels on CUDA (bf16/f16/f32, head
    /// dims 16–128); `false`: the composite candle ops everywhere. Elsewhere it changes nothing.
    /// `CARAMBA_FUSED_TRAINING=0` turns the kernels off whatever this says. Default: true.
    #[serde(skip_serializing_if = "is_true")]
    pub fused: bool,
    /// The orchestrated trainer (see `train::orchestrator`): watches the loss and switches between
    /// optimizer strategies. Default: none (train as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<OrchestratorSpec>,
    /// Extra sinks of the run's scalars (`tensorboard`, `live`; see [`crate::instrument`]), a list or the original's string `"tb+live"`; not part of the fingerprint. Default: `defaults.logging.instrument`, else none.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::instrument::deserialize_list"
    )]
    pub instrument: Vec<crate::instrument::InstrumentKind>,
}

// why: the default is not serialized, so the fingerprints of runs from before this field stay.
fn is_true(b: &bool) -> bool {
    *b
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            batch_size: 16,
            grad_accum: 1,
            lr: 3e-4,
            optimizer: OptimizerKind::Adamw,
            betas: [0.9, 0.95],
            eps: 1e-8,
            weight_decay: 0.1,
            momentum: 0.9,
            schedule: ScheduleKind::Cosine,
            warmup_steps: 0,
            min_lr_ratio: 0.1,
            grad_clip: 1.0,
            eval_every: 100,
            eval_iters: 10,
            save_every: None,
            keep_checkpoints: 2,
            log_every: 10,
            device: "cpu".into(),
            dtype: "auto".into(),
            fused: true,
            orchestrator: None,
            instrument: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_defaults_to_true_and_is_serialized_only_when_off() {
        let on: TrainSpec = serde_json::from_str("{}").expect("defaults");
        assert!(on.fused);
        // why: runs fingerprinted before the field existed keep their fingerprint.
        assert!(!serde_json::to_string(&on).expect("json").contains("fused"));
        let off: TrainSpec = serde_json::from_str(r#"{"fused": false}"#).expect("fused: false");
        assert!(!off.fused);
        assert!(
            serde_json::to_string(&off)
                .expect("json")
                .contains(r#""fused":false"#)
        );
        assert!(serde_json::from_str::<TrainSpec>(r#"{"fused": "yes"}"#).is_err());
    }
}
