//! caramba: architectures as YAML manifests, on candle.
//!
//! The modules are listed in pipeline order; reading them top to bottom is the architecture:
//! manifest ─► compiler ─► model ─► train ─► experiment, with `infer` and `loader` beside them.

/// KV caches in storage kinds fp32/fp16/bf16/q8_0/q4_0/nf4 and the attention that reads them directly.
pub mod cache;
/// clap subcommands (`compile`, `run`, `prepare`, …) and exit codes.
pub mod cli;
/// Lowered manifest → ordered plan (targets → runs → verify → benchmarks); `--print-plan`.
pub mod compiler;
/// tracing subscriber + indicatif progress bars that live together.
pub mod console;
/// Memory-mapped `.npy` token datasets; tokenizers; `prepare` (text → tokens).
pub mod data;
/// The runner that walks a plan and owns the run directory.
pub mod experiment;
/// One file per layer: attention, norms, SwiGLU, linear, dropout, RoPE, embedding.
pub mod layer;
/// Serde types of the manifest, `${var}` substitution, lowering and validation with paths and spans.
pub mod manifest;
/// Building a module tree from a topology; the LM wrapper; the forward context; seeded init.
pub mod model;
/// Graph nodes that own children: stacked, residual, nested, parallel, branching, cyclic, recurrent.
pub mod topology;
/// Trainer loop, optimizers with savable state, schedules, checkpoint/resume.
pub mod train;
/// Llama → DBA surgery and distillation.
pub mod upcycle;
