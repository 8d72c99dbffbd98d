//! Options of every command that loads a model (`--model`, `--dequantize`, `--requantize`,
//! `--device`, `--dtype`), resolved once into [`LoadOptions`].

use candle_core::quantized::GgmlDType;

use super::CliError;
use crate::loader::{LoadOptions, LoadedModel, TextTokenizer, load};

/// Device and dtype options of the commands that load a model.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// Where to run: cpu, cuda, cuda:N or metal (needs a build with that feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights and activations: auto (bf16 on CUDA, f32 elsewhere), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
}

impl DeviceArgs {
    pub fn resolve(&self) -> Result<(candle_core::Device, candle_core::DType), CliError> {
        let device = crate::device::parse_device(&self.device).map_err(CliError::usage)?;
        let dtype = crate::device::resolve_dtype(&self.dtype, &device).map_err(CliError::usage)?;
        Ok((device, dtype))
    }
}

/// Options shared by every command that loads a model.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// The model: a .gguf file, an HF directory (config.json + safetensors + tokenizer.json),
    /// `hf:org/name[@rev]`, a caramba run/checkpoint directory, or a fetched name (smollm2-135m).
    #[arg(long, short = 'm')]
    pub model: String,
    /// Expand GGUF quantized weights to f32 instead of computing on the quantized blocks.
    #[arg(long)]
    pub dequantize: bool,
    /// Re-quantize GGUF matrices stored as Q4_1/Q5_0/Q5_1 (no candle SIMD kernel) at load to this
    /// type (q8_0, q4_0, q4k, q6k), or keep them as stored (`native`; Q4_1 then runs on caramba's
    /// own AVX-512 VNNI kernel where the CPU has one).
    #[arg(long, default_value = "native")]
    pub requantize: String,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl ModelArgs {
    /// The load options these flags name (device and dtype decided here, once).
    pub fn resolve(&self) -> Result<LoadOptions, CliError> {
        let requantize = match self.requantize.to_ascii_lowercase().as_str() {
            "native" | "none" => None,
            "q8_0" => Some(GgmlDType::Q8_0),
            "q4_0" => Some(GgmlDType::Q4_0),
            "q4k" | "q4_k" => Some(GgmlDType::Q4K),
            "q6k" | "q6_k" => Some(GgmlDType::Q6K),
            other => {
                return Err(CliError::usage(miette::miette!(
                    help = "one of: native, q8_0, q4_0, q4k, q6k",
                    "--requantize {other}: unknown block type"
                )));
            }
        };
        let (device, dtype) = self.device.resolve()?;
        Ok(LoadOptions {
            dequantize: self.dequantize,
            requantize,
            device,
            dtype,
        })
    }
}

/// Load `model` with `opts`, logging what was loaded and how long it took.
pub fn load_model(model: &str, opts: &LoadOptions) -> Result<LoadedModel, CliError> {
    let started = std::time::Instant::now();
    let loaded = load(model, opts).map_err(CliError::usage)?;
    tracing::info!(
        "loaded {} ({:.1} MB of weights) in {:.2}s on {} as {}",
        loaded.path.display(),
        loaded.weight_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        crate::device::describe(&loaded.device),
        crate::device::dtype_name(loaded.dtype),
    );
    Ok(loaded)
}

/// The model's tokenizer, or a usage error saying where to put one.
pub fn tokenizer(loaded: &LoadedModel) -> Result<&TextTokenizer, CliError> {
    loaded.tokenizer.as_ref().ok_or_else(|| {
        CliError::usage(miette::miette!(
            help = "put the model's tokenizer.json next to model_spec.json (or in its run directory)",
            "{}: this model has no tokenizer",
            loaded.path.display()
        ))
    })
}
