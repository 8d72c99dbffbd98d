//! Model sources: HF safetensors directories, GGUF files, the HF hub, caramba checkpoints, and the
//! tokenizers that come with them — resolved by one [`ModelSource`] and loaded into one
//! [`LoadedModel`] whose topology is the one a manifest would describe.
//!
//! Tensor names meet topology paths in exactly one place, [`names`].

mod error;
pub mod fetch;
pub mod gguf;
pub mod gguf_layout;
pub mod hf_dir;
pub mod hub;
mod llama_config;
mod loaded;
pub mod names;
mod safetensors_file;
mod source;
mod tokenizer;

pub use error::LoadError;
pub use fetch::{cache_dir, fetch};
pub use llama_config::{HfLlamaConfig, IdList, LlamaConfig};
pub use loaded::{
    CHECKPOINT_MAX_SEQ_LEN, LoadOptions, LoadedModel, RANDOM_WEIGHTS_SEED, load, load_checkpoint, load_gguf,
    load_hf_dir, load_random, load_source,
};
pub use source::ModelSource;
pub use tokenizer::{TextTokenizer, TokenizeError};

/// `t` when it has the shape a model asks for under `name`, else an error naming both shapes
/// (the shape check of every weight backend's `get`).
pub fn expect_shape(
    t: candle_core::Tensor,
    shape: &candle_core::Shape,
    name: &str,
) -> candle_core::Result<candle_core::Tensor> {
    if t.shape() != shape {
        candle_core::bail!(
            "`{name}` has shape {:?}, the model expects {:?}",
            t.dims(),
            shape.dims()
        );
    }
    Ok(t)
}
