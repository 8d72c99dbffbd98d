//! Lowered manifest → executable plan: targets → runs → verify → benchmarks, in a stable order,
//! with every default decided. `compile` drives the whole chain (load, vars, types, validate,
//! lower, plan, refuse runs that cannot fit in memory); `render_plan` is `--print-plan` (the
//! `caramba compile` command itself is `cli::compile`).

pub mod compile;
pub mod memory;
pub mod plan;
pub mod render;
pub mod stats;

pub use compile::{Compiled, compile, compile_str};
pub use memory::TrainingMemory;
pub use plan::{Plan, RunPlan, TargetPlan};
pub use render::render_plan;
pub use stats::ModelStats;
