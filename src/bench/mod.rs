//! Benchmarks and their publication-ready artifacts.
//!
//! A target's `benchmarks:` ([`spec`]) or `caramba bench KIND` (`cli::bench`) run the benchmarks
//! ([`runner`]: perplexity, [`latency`], [`memory`], [`accuracy`], [`generation`], [`behavior`]
//! over [`eval_cases`]) on [`BenchModel`]s; they produce the records of
//! [`results`](crate::bench::results); a [`Report`](crate::bench::Report) gathers them with the
//! run's metadata, [`Summary`](crate::bench::Summary) compares a teacher with a student, and
//! [`write_all`](crate::bench::artifacts::write_all) turns the report into JSON, CSV, LaTeX, figures and
//! one self-contained HTML page.

pub mod accuracy;
pub mod artifacts;
pub mod behavior;
pub mod error;
pub mod eval_cases;
pub mod generation;
pub mod latency;
pub mod memory;
pub mod metadata;
pub mod model;
pub mod results;
pub mod runner;
pub mod spec;
pub mod summary;
pub mod table;

pub use error::BenchError;
pub use model::BenchModel;
pub use results::{
    AccuracyResult, LatencyResult, MemoryResult, Metadata, PerplexityResult, Report, Stat, TextSource,
};
pub use runner::{BenchContext, BenchOutcome, run_benchmarks};
pub use spec::BenchmarkSpec;
pub use summary::{KvCacheComparison, PerplexityComparison, Summary, ThroughputComparison};
