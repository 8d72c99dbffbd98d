//! The flagship: a pretrained Llama becomes a Decoupled Bottleneck Attention student by surgery,
//! is trained back by blockwise distillation and a global fine-tune, and is verified against the
//! teacher. `runner` drives it for `trainer: upcycle` targets.

pub mod artifacts;
pub mod blockwise;

pub mod global;
pub mod pairing;
pub mod runner;
pub mod spec;
pub mod student;
pub mod surgery;
pub mod teacher;
pub mod verify;

pub use runner::run_upcycle;
pub use spec::{DistillLoss, Phase, UpcycleSpec};
pub use surgery::{DbaInit, SurgeryError, TeacherAttention, surgery};

/// Why an upcycle failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum UpcycleError {
    #[error("teacher and student do not fit: {0}")]
    #[diagnostic(help(
        "the student must mirror the teacher's layers; only attention layers may change mode"
    ))]
    Mismatch(String),
    /// The target asks for something an upcycle cannot do (no runs, no teacher, a bad setting).
    #[error("the upcycle target cannot run: {0}")]
    #[diagnostic(help("fix the target in the manifest (docs/upcycle.md lists every setting)"))]
    Spec(String),
    /// Scoring the eval cases (teacher or student) failed.
    #[error("eval cases: {0}")]
    Eval(String),
    /// An output other than a plain file write failed (artifacts, the teacher's tokenizer).
    #[error("cannot write {what}: {detail}")]
    Write { what: String, detail: String },
    /// A record could not be serialized (a bug: every record is plain data).
    #[error("cannot serialize {what}: {detail}")]
    Serialize { what: &'static str, detail: String },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Load(#[from] crate::loader::LoadError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Bench(#[from] crate::bench::BenchError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error("verify after run `{run}` failed: {detail}")]
    #[diagnostic(help("loosen the limits, train longer, or set `fail_fast: false` to record and go on"))]
    VerifyFailed { run: String, detail: String },
    #[error("{what} is not finite; stopped")]
    NonFinite { what: String },
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("cannot write `{path}`: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}
