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
    /// SWATS (Keskar & Socher 2017): Adam with L2 decay, then SGD with momentum once the
    /// published switch criterion holds. Settings: `betas`, `eps`, `weight_decay`, `swats:`.
    Swats,
    /// PIDAO: a PID controller on the gradient (`kp·g + ki·∫g + kd·dg`), decoupled decay.
    /// Settings: `weight_decay`, `pid:`.
    Pidao,
}

/// How gradients are clipped before the optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClipKind {
    /// One global norm over every gradient, bounded by `grad_clip`.
    #[default]
    Global,
    /// AdaGC (Wang et al. 2025): each parameter tensor against an EMA of its own clipped norm,
    /// after `adagc.warmup` steps of global clipping at `grad_clip`. Settings: `adagc:`.
    Adagc,
}

/// The `pid:` block of PIDAO (`optimizer: pidao`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PidSpec {
    /// Proportional gain, on the gradient. Default: 1.0.
    pub kp: f64,
    /// Integral gain, on the clamped running sum of gradients. Default: 0.1.
    pub ki: f64,
    /// Derivative gain, on the EMA of gradient differences. Default: 0.01.
    pub kd: f64,
    /// Each element of the integral stays in [−integral_clip, integral_clip]. Default: 10.0.
    pub integral_clip: f64,
    /// EMA coefficient of the derivative term. Default: 0.9.
    pub derivative_ema: f64,
}

impl Default for PidSpec {
    fn default() -> Self {
        Self {
            kp: 1.0,
            ki: 0.1,
            kd: 0.01,
            integral_clip: 10.0,
            derivative_ema: 0.9,
        }
    }
}

/// The `swats:` block of SWATS (`optimizer: swats`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwatsSpec {
    /// Switch when |Λ − γ| is below this (the paper's ε; in lr units). Default: 1e-9.
    pub tolerance: f64,
    /// Earliest step at which the switch may happen (the paper's `k > 1`). Default: 2.
    pub min_steps: usize,
}

impl Default for SwatsSpec {
    fn default() -> Self {
        Self {
            tolerance: 1e-9,
            min_steps: 2,
        }
    }
}

/// The `adagc:` block (`clip: adagc`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaGcSpec {
    /// EMA coefficient of each tensor's clipped gradient norm. Default: 0.98.
    pub beta: f64,
    /// A tensor's gradient is clipped to `lambda ×` its EMA norm. Default: 1.05.
    pub lambda: f64,
    /// Steps of global-norm clipping (at `grad_clip`) while the EMAs start. Default: 100.
    pub warmup: usize,
}

impl Default for AdaGcSpec {
    fn default() -> Self {
        Self {
            beta: 0.98,
            lambda: 1.05,
            warmup: 100,
        }
    }
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
    /// (β1, β2) of AdamW, Lion and SWATS (whose SGD phase uses β1 as its momentum). Default:
    /// [0.9, 0.95] (Lion: use e.g. [0.9, 0.99]).
    pub betas: [f64; 2],
    /// AdamW and SWATS ε. Default: 1e-8.
    pub eps: f64,
    /// Decoupled weight decay (AdamW, Lion, PIDAO) or L2 (SGD, SWATS). Default: 0.1.
    pub weight_decay: f64,
    /// SGD momentum. Default: 0.9.
    pub momentum: f64,
    /// Default: cosine.
    pub schedule: ScheduleKind,
    /// Linear warmup steps. Default: 0.
    pub warmup_steps: usize,
    /// Final lr as a fraction of `lr` (cosine, linear). Default: 0.1.
    pub min_lr_ratio: f64,
    /// Global-norm gradient clipping (with `clip: adagc`, during its warmup); 0 disables.
    /// Default: 1.0.
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
    /// PIDAO gains (`optimizer: pidao`). Default: kp 1, ki 0.1, kd 0.01, integral_clip 10,
    /// derivative_ema 0.9.
    #[serde(skip_serializing_if = "is_default")]
    pub pid: PidSpec,
    /// SWATS switch settings (`optimizer: swats`). Default: tolerance 1e-9, min_steps 2.
    #[serde(skip_serializing_if = "is_default")]
    pub swats: SwatsSpec,
    /// `global` or `adagc`. Default: global.
    #[serde(skip_serializing_if = "is_default")]
    pub clip: ClipKind,
    /// AdaGC settings (`clip: adagc`). Default: beta 0.98, lambda 1.05, warmup 100.
    #[serde(skip_serializing_if = "is_default")]
    pub adagc: AdaGcSpec,
}

// why: the default is not serialized, so the fingerprints of runs from before this field stay.
fn is_true(b: &bool) -> bool {
    *b
}

// why: as `is_true` — a block left at its defaults keeps old manifests' fingerprints.
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
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
            pid: PidSpec::default(),
            swats: SwatsSpec::default(),
            clip: ClipKind::Global,
            adagc: AdaGcSpec::default(),
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

    #[test]
    fn new_blocks_at_their_defaults_leave_the_json_as_before() {
        // why: `fingerprint()` hashes this JSON; manifests from before these fields keep theirs.
        let old = serde_json::to_string(&TrainSpec::default()).expect("json");
        for key in ["pid", "swats", "clip", "adagc"] {
            assert!(
                !old.contains(&format!("\"{key}\"")),
                "`{key}` serialized at its default"
            );
        }
        let written: TrainSpec =
            serde_json::from_str(r#"{"pid": {}, "swats": {}, "clip": "global", "adagc": {}}"#)
                .expect("defaults");
        assert_eq!(serde_json::to_string(&written).expect("json"), old);
        let set: TrainSpec = serde_json::from_str(
            r#"{"optimizer": "pidao", "pid": {"kd": 0.5}, "clip": "adagc", "adagc": {"warmup": 3}}"#,
        )
        .expect("set");
        assert_eq!(set.optimizer, OptimizerKind::Pidao);
        assert_eq!((set.pid.kp, set.pid.kd), (1.0, 0.5));
        assert_eq!(
            (set.clip, set.adagc.warmup, set.adagc.beta),
            (ClipKind::Adagc, 3, 0.98)
        );
        let json = serde_json::to_string(&set).expect("json");
        assert!(
            json.contains(r#""clip":"adagc""#) && json.contains(r#""kd":0.5"#),
            "{json}"
        );
        assert!(serde_json::from_str::<TrainSpec>(r#"{"pid": {"kq": 1}}"#).is_err());
        assert!(serde_json::from_str::<TrainSpec>(r#"{"optimizer": "adam"}"#).is_err());
    }
}
