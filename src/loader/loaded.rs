//! Loading a [`ModelSource`] into a [`LoadedModel`]: the built caramba model, the spec it was
//! built from, its tokenizer and its limits.

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::gguf::GgufFile;
use super::hf_dir::SafetensorsFiles;
use super::{LlamaConfig, LoadError, ModelSource, TextTokenizer, hub};
use crate::model::{LanguageModel, ModelSpec};

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Dtype of dense weights and activations. Default: f32.
    pub dtype: DType,
    /// Default: CPU.
    pub device: Device,
    /// Expand GGUF quantized matrices to dense `dtype` instead of computing on the blocks.
    /// Default: false.
    pub dequantize: bool,
    /// Re-quantize GGUF matrices stored in block types without a candle SIMD kernel (Q4_1, Q5_0,
    /// Q5_1, Q8_1; see [`super::gguf::SLOW_BLOCKS`]) to this type at load; `None` keeps the file's
    /// blocks. Default: none (Q4_1 runs on caramba's own kernel, `ops::qmatvec`, on CPUs with
    /// AVX-512 VNNI; elsewhere `Some(Q8_0)` is the faster choice; docs/inference.md measures both).
    pub requantize: Option<GgmlDType>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            dequantize: false,
            requantize: None,
        }
    }
}

/// A model ready for inference or as a teacher.
pub struct LoadedModel {
    pub model: LanguageModel,
    /// The topology the model was built from (what a manifest would describe).
    pub spec: ModelSpec,
    /// The Llama config, for HF and GGUF sources.
    pub config: Option<LlamaConfig>,
    /// The tokenizer, when the source has one.
    pub tokenizer: Option<TextTokenizer>,
    /// The resolved file or directory.
    pub path: PathBuf,
    /// Longest context (positions) the model supports.
    pub max_seq_len: usize,
    /// Bytes of weights as stored in the source.
    pub weight_bytes: usize,
    pub device: Device,
    pub dtype: DType,
}

/// Context length assumed for caramba checkpoints (their spec does not record one yet).
pub const CHECKPOINT_MAX_SEQ_LEN: usize = 4096;

/// Resolve `source` (see [`ModelSource::parse`]) and load it.
pub fn load(source: &str, opts: &LoadOptions) -> Result<LoadedModel, LoadError> {
    load_source(&ModelSource::parse(source)?, opts)
}

/// Load a resolved source.
pub fn load_source(source: &ModelSource, opts: &LoadOptions) -> Result<LoadedModel, LoadError> {
    match source {
        ModelSource::HfDir(dir) => load_hf_dir(dir, opts),
        ModelSource::Gguf(path) => load_gguf(path, opts),
        ModelSource::Hub { repo, revision } => load_hf_dir(&hub::snapshot(repo, revision.as_deref())?, opts),
        ModelSource::Checkpoint(dir) => load_checkpoint(dir, opts),
        ModelSource::Random(config) => load_random(config, opts),
    }
}

fn build(spec: &ModelSpec, vb: VarBuilder, path: &Path) -> Result<LanguageModel, LoadError> {
    LanguageModel::build(spec, vb).map_err(|source| LoadError::Build {
        path: path.into(),
        source,
    })
}

/// An HF directory: `config.json`, safetensors, `tokenizer.json`.
pub fn load_hf_dir(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel, LoadError> {
    let cfg = LlamaConfig::from_hf_file(&dir.join("config.json"))?;
    let backend = SafetensorsFiles::open_dir(dir)?.llama_backend(&cfg)?;
    let weight_bytes = backend.weight_bytes();
    let spec = cfg.model_spec();
    let vb = VarBuilder::from_backend(Box::new(backend), opts.dtype, opts.device.clone());
    let model = build(&spec, vb, dir)?;
    let tokenizer = TextTokenizer::from_hf_dir(dir, cfg.bos_token_id, &cfg.eos_token_ids)?;
    Ok(LoadedModel {
        model,
        spec,
        max_seq_len: cfg.max_seq_len,
        config: Some(cfg),
        tokenizer: Some(tokenizer),
        path: dir.into(),
        weight_bytes,
        device: opts.device.clone(),
        dtype: opts.dtype,
    })
}

/// A GGUF file: metadata, tensors (kept quantized unless `opts.dequantize`), embedded tokenizer.
pub fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<LoadedModel, LoadError> {
    // why: norms and the residual stream would be f16/bf16 while quantized matmuls return f32;
    // the first RMSNorm of a forward failed ("unsupported dtype"), long after loading.
    if opts.dtype != DType::F32 {
        return Err(LoadError::UnsupportedDtype {
            path: path.into(),
            dtype: format!("{:?}", opts.dtype).to_lowercase(),
        });
    }
    let gguf = GgufFile::open(path)?;
    let cfg = gguf.llama_config()?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let weight_bytes = gguf.weight_bytes(&super::names::llama_params(&cfg));
    let spec = cfg.model_spec();
    let backend = gguf.backend(&cfg, opts.dequantize, opts.requantize)?;
    let vb = VarBuilder::from_backend(Box::new(backend), opts.dtype, opts.device.clone());
    let model = build(&spec, vb, path)?;
    Ok(LoadedModel {
        model,
        spec,
        max_seq_len: cfg.max_seq_len,
        config: Some(cfg),
        tokenizer: Some(tokenizer),
        path: path.into(),
        weight_bytes,
        device: opts.device.clone(),
        dtype: opts.dtype,
    })
}

/// Seed of the weights of `random:` sources: fixed, so that two runs (or two processes compared
/// side by side) hold the same model.
pub const RANDOM_WEIGHTS_SEED: u64 = 0x5eed;

/// An HF `config.json` with seeded random weights of the real shapes: what a decode or memory
/// benchmark of an architecture needs when its weights cannot be downloaded. No tokenizer.
pub fn load_random(config: &Path, opts: &LoadOptions) -> Result<LoadedModel, LoadError> {
    let cfg = LlamaConfig::from_hf_file(config)?;
    let spec = cfg.model_spec();
    let vars = crate::model::SeededVarMap::new(RANDOM_WEIGHTS_SEED);
    let model = build(&spec, vars.var_builder(opts.dtype, &opts.device), config)?;
    let weight_bytes = vars
        .named_vars()
        .iter()
        .filter(|(name, _)| !crate::model::init::is_buffer(name))
        .map(|(_, v)| v.as_tensor().elem_count() * opts.dtype.size_in_bytes())
        .sum();
    Ok(LoadedModel {
        model,
        spec,
        max_seq_len: cfg.max_seq_len,
        config: Some(cfg),
        tokenizer: None,
        path: config.into(),
        weight_bytes,
        device: opts.device.clone(),
        dtype: opts.dtype,
    })
}

/// A caramba checkpoint: `model_spec.json` (a lowered [`ModelSpec`]) + `model.safetensors` with
/// tensors named by topology path; a `tokenizer.json` in the directory or up to three parents
/// (the run directory) is used when present.
pub fn load_checkpoint(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel, LoadError> {
    let spec_path = dir.join("model_spec.json");
    let text = std::fs::read_to_string(&spec_path).map_err(|e| LoadError::io(&spec_path, e))?;
    let spec: ModelSpec = serde_json::from_str(&text).map_err(|e| LoadError::Config {
        path: spec_path.clone(),
        message: e.to_string(),
    })?;
    let weights = dir.join("model.safetensors");
    let files = SafetensorsFiles::open(std::slice::from_ref(&weights))?;
    let weight_bytes = files.weight_bytes(files.names().cloned().collect::<Vec<_>>().into_iter());
    let vb = VarBuilder::from_backend(
        Box::new(CheckpointBackend(files)),
        opts.dtype,
        opts.device.clone(),
    );
    let model = build(&spec, vb, &weights)?;
    let tokenizer = dir
        .ancestors()
        .take(4)
        .find(|d| d.join("tokenizer.json").exists())
        .map(|d| TextTokenizer::from_hf_dir(d, None, &[]))
        .transpose()?;
    Ok(LoadedModel {
        model,
        spec,
        config: None,
        tokenizer,
        path: dir.into(),
        max_seq_len: CHECKPOINT_MAX_SEQ_LEN,
        weight_bytes,
        device: opts.device.clone(),
        dtype: opts.dtype,
    })
}

/// Tensors named by topology path, as the trainer saves them; a missing one is an error (never
/// a fresh initialisation).
struct CheckpointBackend(SafetensorsFiles);

impl candle_nn::var_builder::SimpleBackend for CheckpointBackend {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let t = self.0.load(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "checkpoint tensor `{name}` has shape {:?}, the model expects {:?}",
                t.dims(),
                s.dims()
            );
        }
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        self.0.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.shape_of(name).is_some()
    }
}
