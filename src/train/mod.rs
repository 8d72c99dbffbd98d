//! Trainer loop, optimizers with savable state, schedules, checkpoint/resume.
//!
//! Entry points: [`run`] (build a model from its spec with seeded weights and train it) and
//! [`Trainer`] (train a model the caller built, e.g. a surgically modified one). Both write
//! `metrics.jsonl` and `checkpoints/` into the run directory and resume from it. Classifiers train
//! through [`train_classifier`] (same optimizers, schedule, checkpoints; class cross-entropy).

pub mod branch;
pub mod adagc;
pub mod checkpoint;
pub mod classify;
pub mod clip;
pub mod error;
pub mod gradients;
pub mod metrics;
pub mod optimizer;
pub mod orchestrator;
pub mod phase_clock;
pub mod schedule;
pub mod spec;
pub mod step;
pub mod trainer;

pub use checkpoint::{Checkpoint, CheckpointState, latest_complete};
pub use classify::{ClassifierSummary, Evaluation, train_classifier};
pub use error::TrainError;
pub use metrics::{DecisionLine, EvalLine, MetricLine, TrainLine, read_metrics};
pub use optimizer::Optimizer;
pub use schedule::Schedule;
pub use spec::{AdaGcSpec, ClipKind, OptimizerKind, PidSpec, ScheduleKind, SwatsSpec, TrainSpec};
pub use trainer::{
    LossFn, TrainOptions, TrainSummary, Trainer, fingerprint, interrupt_requested, lm_loss, parse_device,
    parse_dtype, run, watch_ctrlc,
};
