//! Trainer loop, optimizers with savable state, schedules, checkpoint/resume.

pub mod spec;

pub use spec::{OptimizerKind, ScheduleKind, TrainSpec};
