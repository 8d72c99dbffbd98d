//! The teacher: a pretrained model from any source, loaded twice over the same files — once to run
//! (quantized weights stay quantized) and once as dense f32 tensors by topology path (for copying
//! and surgery).

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::loader::gguf::GgufFile;
use crate::loader::hf_dir::SafetensorsFiles;
use crate::loader::{LlamaConfig, LoadError, LoadOptions, LoadedModel, ModelSource, fetch, hub, load_source};

/// A loaded teacher and a dense view of its weights.
pub struct Teacher {
    pub loaded: LoadedModel,
    /// f32 weights on CPU under the teacher's topology paths.
    pub weights: VarBuilder<'static>,
    pub source: ModelSource,
}

/// Resolve `source` (fetching a known model such as `smollm2-135m` on first use) and load it.
pub fn load_teacher(source: &str, device: &Device) -> Result<Teacher, LoadError> {
    let resolved =
        if fetch::KNOWN_MODELS.iter().any(|m| m.name == source) && !std::path::Path::new(source).exists() {
            fetch(source)?
        } else {
            ModelSource::parse(source)?
        };
    let opts = LoadOptions {
        dtype: DType::F32,
        device: device.clone(),
        // why: on a GPU the teacher runs on every global step (KL) and on every blockwise batch:
        // dense GEMMs beat dequantizing each quantized matrix per call, and the memory is small.
        dequantize: !device.is_cpu(),
        requantize: None,
    };
    let loaded = load_source(&resolved, &opts)?;
    let weights = dense_weights(&resolved)?;
    Ok(Teacher {
        loaded,
        weights,
        source: resolved,
    })
}

fn dense_weights(source: &ModelSource) -> Result<VarBuilder<'static>, LoadError> {
    let cpu = Device::Cpu;
    Ok(match source {
        ModelSource::Gguf(path) => {
            let gguf = GgufFile::open(path)?;
            let cfg = gguf.llama_config()?;
            VarBuilder::from_backend(Box::new(gguf.backend(&cfg, true, None)?), DType::F32, cpu)
        }
        ModelSource::HfDir(dir) => hf_weights(dir)?,
        ModelSource::Hub { repo, revision } => hf_weights(&hub::snapshot(repo, revision.as_deref())?)?,
        ModelSource::Checkpoint(dir) => {
            let path = dir.join("model.safetensors");
            // SAFETY: the file is mapped read-only and not modified while the teacher lives.
            unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &cpu) }
                .map_err(|source| LoadError::Build { path, source })?
        }
        // The same seed draws the same weights on any device (see `SeededVarMap`).
        ModelSource::Random(_) => {
            crate::model::SeededVarMap::new(crate::loader::RANDOM_WEIGHTS_SEED).var_builder(DType::F32, &cpu)
        }
    })
}

fn hf_weights(dir: &std::path::Path) -> Result<VarBuilder<'static>, LoadError> {
    let cfg = LlamaConfig::from_hf_file(&dir.join("config.json"))?;
    let backend = SafetensorsFiles::open_dir(dir)?.llama_backend(&cfg)?;
    Ok(VarBuilder::from_backend(
        Box::new(backend),
        DType::F32,
        Device::Cpu,
    ))
}
