//! Everything that can go wrong while resolving and loading a model, each naming the file and,
//! where there is one, the tensor.

use std::path::PathBuf;

/// A model could not be resolved or loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    #[error("{path}: no such file or directory")]
    #[diagnostic(help(
        "a model is a directory with config.json + *.safetensors + tokenizer.json, a .gguf file, \
         hf:org/name[@revision], a caramba run or checkpoint directory, or a fetched name (`caramba fetch smollm2-135m`)"
    ))]
    NotFound { path: PathBuf },

    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not a model source: {reason}")]
    #[diagnostic(help(
        "expected a directory with config.json + *.safetensors, a .gguf file, or a directory with \
         model_spec.json + model.safetensors (a caramba checkpoint)"
    ))]
    UnknownSource { path: PathBuf, reason: String },

    #[error("{path}: invalid model config: {message}")]
    Config { path: PathBuf, message: String },

    #[error("{path}: unsupported architecture `{found}`")]
    #[diagnostic(help("caramba loads Llama-architecture models (LlamaForCausalLM; GGUF `llama`)"))]
    UnsupportedArchitecture { path: PathBuf, found: String },

    #[error("{path}: unsupported RoPE scaling `{found}`")]
    #[diagnostic(help("supported: no scaling, or rope_scaling.rope_type = llama3"))]
    UnsupportedRope { path: PathBuf, found: String },

    #[error("{path}: cannot run a GGUF model as {dtype}")]
    #[diagnostic(help(
        "GGUF models compute in f32 (their quantized matmuls produce f32 activations): drop \
         --dtype, or load an HF safetensors directory to run in f16 or bf16"
    ))]
    UnsupportedDtype { path: PathBuf, dtype: String },

    #[error("{file}: missing tensor `{tensor}` (for `{target}`)")]
    MissingTensor {
        file: PathBuf,
        tensor: String,
        target: String,
    },

    #[error("{file}: tensor `{tensor}` has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        file: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{file}: tensor `{tensor}`: {message}")]
    BadTensor {
        file: PathBuf,
        tensor: String,
        message: String,
    },

    #[error("{file}: not a valid {format} file: {message}")]
    Corrupt {
        file: PathBuf,
        format: &'static str,
        message: String,
    },

    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error("cannot reach the Hugging Face hub for `{repo}`: {message}")]
    #[diagnostic(help(
        "download the model elsewhere and pass its local path (a directory with config.json, \
         *.safetensors and tokenizer.json, or a .gguf file) to --model; files already in the hub \
         cache ($HF_HOME/hub) are used without the network, and HF_HUB_OFFLINE=1 skips it"
    ))]
    HubUnreachable { repo: String, message: String },

    #[error("`{repo}` has no file `{file}` on the hub: {message}")]
    HubMissing {
        repo: String,
        file: String,
        message: String,
    },

    #[error("cannot fetch `{name}`: {message}")]
    #[diagnostic(help("{help}"))]
    Fetch {
        name: String,
        message: String,
        help: String,
    },

    #[error("{path}: building the model: {source}")]
    Build {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
}

impl LoadError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::NotFound { path }
        } else {
            Self::Io { path, source }
        }
    }
}
