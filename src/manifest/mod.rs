//! The manifest: what an experiment file says, checked and made explicit.
//!
//! `load` (file → value + span map) → `parse` (`!include`, `${ENV:…}`, `${vars}`, the original's
//! forms rewritten by [`legacy`], defaults, strict typing with paths) →
//! `validate` (every problem, each with its path and line:column) → `lower` (repeat and seed
//! expansion, defaults filled in). [`crate::compiler`] drives the chain and builds the plan.
//! The schema is documented field by field in docs/manifests.md.

pub mod components;
pub mod error;
pub mod inherit;
pub mod legacy;
pub mod load;
pub mod lower;
pub mod parse;
pub mod types;
pub mod validate;
pub mod vars;

pub use components::{DataKind, MetricKind, ObjectiveKind, SystemKind};
pub use error::{ManifestError, Problem};
pub use load::{Format, Source, SpanMap};
pub use lower::lower;
pub use types::{
    DataDefaults, Defaults, LoggingDefaults, Manifest, Run, RunGenerate, RunMode, RuntimeDefaults, Seeds,
    Target, TargetKind, TrainerKind,
};
pub use validate::validate;
