//! Benchmarks and their publication-ready artifacts.
//!
//! The benchmark runners (perplexity, latency, memory, accuracy) produce the records of
//! [`results`](crate::bench::results); a [`Report`](crate::bench::Report) gathers them with the run's
//! metadata, [`Summary`](crate::bench::Summary) compares a teacher with a student, and
//! [`write_all`](crate::bench::artifacts::write_all) turns the report into JSON, CSV, LaTeX, figures and
//! one self-contained HTML page.

pub mod artifacts;
pub mod results;
pub mod summary;

pub use results::{AccuracyResult, LatencyResult, MemoryResult, Metadata, PerplexityResult, Report, Stat};
pub use summary::{KvCacheComparison, PerplexityComparison, Summary, ThroughputComparison};
