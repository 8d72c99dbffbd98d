//! The runner that walks a plan: prepares data, owns the run directory, trains each run, and
//! prints what happened; classifier targets go through their own runner (`classifier`). `caramba run MANIFEST [--target T] [--dry-run] [--fresh]`.

mod classifier;
mod error;
mod run_dir;
mod runner;
mod sample;

pub use error::RunError;
pub use run_dir::{RunDir, RunMetadata, build_features};
pub use runner::{RunOptions, run};
