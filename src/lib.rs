//! caramba: architectures as YAML manifests, on candle.
//!
//! The modules are listed in pipeline order; reading them top to bottom is the architecture:
//! manifest ─► compiler ─► model ─► train / upcycle ─► experiment, with `loader` and `infer` beside them.

/// `--device` / `--dtype`: parsing, `auto`, clear errors for a device the build or machine lacks.
pub mod device;
/// Host allocator settings for large, repeated tensor allocations.
pub mod host_allocator;
/// Records on disk (ground floor): atomic writes, pretty JSON, the git revision, the run-directory lock.
pub mod record;
/// Serde types of the manifest, `${var}` substitution, lowering and validation with paths and spans.
pub mod manifest;
/// Lowered manifest → ordered plan (targets → runs → verify → benchmarks); `--print-plan`.
pub mod compiler;
/// One file per layer: attention (standard, GQA, DBA), norms, SwiGLU, linear, dropout, embedding.
pub mod layer;
/// What layers are built from: scaled dot-product attention, softmax, RoPE, closed-form backward
/// passes, the CPU quantized decode kernels.
pub mod ops;
/// Graph nodes that own children: stacked, residual, nested, parallel, branching, cyclic, recurrent.
pub mod topology;
/// Building a module tree from a topology; the LM wrapper; the forward context; seeded init.
pub mod model;
/// Model sources: HF safetensors + config.json, GGUF, tokenizers, hub, caramba checkpoints.
pub mod loader;
/// Memory-mapped `.npy` token datasets; tokenizers; `prepare` (text → tokens).
pub mod data;
/// Trainer loop, optimizers with savable state, schedules, checkpoint/resume.
pub mod train;
/// Where a run's scalars and events go besides metrics.jsonl: events.jsonl, TensorBoard event
/// files, console lines, a live loss plot.
pub mod instrument;
/// Llama → DBA surgery and distillation.
pub mod upcycle;
/// KV caches beyond the plain one: fp32/fp16/bf16/q8_0/q4_0/nf4 storage and decode attention that reads it directly.
pub mod cache;
/// Hand-written GPU kernels (fused decode attention) and their launchers; `cuda` feature only.
pub mod kernels;
/// Sampler, `Generator` (sessions, streaming, batches), chat templates.
pub mod infer;
/// `caramba serve`: OpenAI-compatible HTTP endpoints over the `infer` generator, one model thread.
pub mod serve;
/// Benchmark result types and the artifact writers (CSV, JSON, PNG/SVG, LaTeX, HTML).
pub mod bench;
/// Agents: process targets (paper_write, paper_review, multiplex_chat, research_loop) that talk
/// to any OpenAI-compatible endpoint, by default a `caramba serve` they start themselves.
pub mod agents;
/// The runner that walks a plan and owns the run directory.
pub mod experiment;
/// tracing subscriber + indicatif progress bars that live together.
pub mod console;
/// The command line: each command's clap arguments, resolved once into library types, and exit codes.
pub mod cli;
