//! Inference: sampling, the [`Generator`] (sessions over a growable KV cache, streaming, batches),
//! incremental detokenization with stop strings, chat templates, and the commands built on them
//! (`caramba generate`, `chat`, `bench perplexity`).

pub mod cache_policy;
pub mod cache_quality;
pub mod chat_template;
pub mod commands;
pub mod generator;
pub mod perplexity;
pub mod sampler;
pub mod speculative;
pub mod speculative_cmd;
pub mod text_stream;

pub use chat_template::{ChatTemplate, Message, TemplateError};
pub use generator::{GenerateConfig, GenerateError, GenerationStats, Generator, StopReason, TokenStream};
pub use perplexity::{Perplexity, perplexity};
pub use sampler::{Sampler, SamplingParams};
pub use speculative::{
    Draft, DraftSource, SpeculativeConfig, SpeculativeError, SpeculativeGenerator, SpeculativeStats,
};
pub use text_stream::TextStream;
