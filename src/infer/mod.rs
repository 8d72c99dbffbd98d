//! Inference: sampling, the [`Generator`] (sessions over a growable KV cache, streaming, batches),
//! incremental detokenization with stop strings, chat templates, speculative decoding, the KV cache
//! choice ([`CacheConfig`], `--cache-kind auto`) and perplexity. The commands built on them
//! (`caramba generate`, `chat`, `bench perplexity`) live in `cli`.

pub mod cache_config;
pub mod cache_policy;
pub mod cache_quality;
pub mod chat_template;
pub mod generator;
pub mod perplexity;
pub mod sampler;
pub mod speculative;
pub mod text_stream;

pub use cache_config::{AutoCache, CacheConfig};
pub use cache_policy::AutoCacheError;
pub use chat_template::{ChatTemplate, Message, TemplateError};
pub use generator::{GenerateConfig, GenerateError, GenerationStats, Generator, StopReason, TokenStream};
pub use perplexity::{Perplexity, perplexity};
pub use sampler::{Sampler, SamplingParams};
pub use speculative::{
    Draft, DraftSource, SpeculativeConfig, SpeculativeError, SpeculativeGenerator, SpeculativeStats,
};
pub use text_stream::TextStream;
