//! Building a module tree from a manifest model; the LM and classifier wrappers; the forward
//! context; seeded init.

pub mod classifier;
pub mod context;
pub mod init;
pub mod kv_cache;
pub mod lm;

pub use classifier::Classifier;
pub use context::{CaptureInputs, ForwardCtx, Trace, TraceKind};
pub use init::SeededVarMap;
pub use kv_cache::{KvCache, QuantKinds};
pub use lm::{LanguageModel, ModelKind, ModelSpec};
