//! GGUF (v2/v3) model files: metadata → [`LlamaConfig`], and a var-builder backend that hands
//! tensors to [`LanguageModel::build`](crate::model::LanguageModel::build) under topology paths.
//!
//! Quantized matrices stay quantized (offered as GGML blocks, see
//! [`crate::layer::linear::quantized_weight`]) unless `dequantize` is asked for; norms are dense.
//! llama.cpp's converter permutes q/k rows into interleaved-RoPE order; caramba's attention is HF
//! half-split, so those rows are put back (on the raw blocks: a row is a whole number of blocks).
//! Tensors are read with plain file reads, not a memory map, so a loaded model's resident memory
//! is its weights, not the file.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use super::gguf_layout::{check_layout, check_magic};
use super::names::{ParamName, llama_params, unpermute_rows};
use super::{LlamaConfig, LoadError};
use crate::layer::linear::{GGML_BLOCKS, GGML_TYPE, ggml_type_id};

/// An opened GGUF file: its metadata and tensor directory (tensor data is read on demand).
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
}

impl GgufFile {
    pub fn open(path: &Path) -> std::result::Result<Self, LoadError> {
        let mut file = File::open(path).map_err(|e| LoadError::io(path, e))?;
        let file_size = file.metadata().map_err(|e| LoadError::io(path, e))?.len();
        let corrupt = |message: String| LoadError::Corrupt {
            file: path.into(),
            format: "GGUF",
            message,
        };
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic).map_err(|_| {
            corrupt(format!(
                "the file has {file_size} bytes, too few for a GGUF header"
            ))
        })?;
        check_magic(magic).map_err(|p| corrupt(p.message))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| LoadError::io(path, e))?;
        let content = Content::read(&mut file).map_err(|e| corrupt(e.to_string()))?;
        check_layout(&content, file_size).map_err(|p| match p.tensor {
            Some(tensor) => LoadError::BadTensor {
                file: path.into(),
                tensor,
                message: p.message,
            },
            None => corrupt(p.message),
        })?;
        Ok(Self {
            path: path.into(),
            content,
        })
    }

    fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn meta_usize(&self, key: &str) -> std::result::Result<Option<usize>, LoadError> {
        self.meta(key)
            .map(|v| match v {
                Value::U8(_) | Value::U16(_) | Value::U32(_) | Value::U64(_) => {
                    v.to_u64().map(|x| x as usize)
                }
                Value::I8(_) | Value::I16(_) | Value::I32(_) | Value::I64(_) => {
                    v.to_i64().map(|x| x.max(0) as usize)
                }
                _ => candle_core::bail!("not an integer"),
            })
            .transpose()
            .map_err(|e| self.config_error(format!("metadata `{key}`: {e}")))
    }

    fn meta_f64(&self, key: &str) -> Option<f64> {
        match self.meta(key)? {
            Value::F32(x) => Some(f64::from(*x)),
            Value::F64(x) => Some(*x),
            _ => None,
        }
    }

    /// A string metadata value.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.meta(key)
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
    }

    fn config_error(&self, message: String) -> LoadError {
        LoadError::Config {
            path: self.path.clone(),
            message,
        }
    }

    /// The Llama configuration in the metadata (`general.architecture = llama`).
    pub fn llama_config(&self) -> std::result::Result<LlamaConfig, LoadError> {
        let arch = self
            .meta_str("general.architecture")
            .unwrap_or("(missing general.architecture)");
        if arch != "llama" {
            return Err(LoadError::UnsupportedArchitecture {
                path: self.path.clone(),
                found: arch.into(),
            });
        }
        let need = |key: &str| -> std::result::Result<usize, LoadError> {
            self.meta_usize(&format!("llama.{key}"))?
                .ok_or_else(|| self.config_error(format!("missing metadata `llama.{key}`")))
        };
        if let Some(kind) = self.meta_str("llama.rope.scaling.type")
            && kind != "none"
        {
            return Err(LoadError::UnsupportedRope {
                path: self.path.clone(),
                found: kind.into(),
            });
        }
        if self.content.tensor_infos.contains_key("rope_freqs.weight") {
            return Err(LoadError::UnsupportedRope {
                path: self.path.clone(),
                found: "per-frequency factors (rope_freqs.weight)".into(),
            });
        }
        let d_model = need("embedding_length")?;
        let n_heads = need("attention.head_count")?;
        let vocab_size = match self.meta_usize("llama.vocab_size")? {
            Some(v) => v,
            None => match self.meta("tokenizer.ggml.tokens") {
                Some(Value::Array(a)) => a.len(),
                _ => return Err(self.config_error("missing metadata `llama.vocab_size`".into())),
            },
        };
        let id = |key: &str| self.meta_usize(key).ok().flatten().map(|x| x as u32);
        let head_dim = match self.meta_usize("llama.attention.key_length")? {
            Some(h) => h,
            None => d_model / n_heads.max(1),
        };
        let cfg = LlamaConfig {
            d_model,
            d_ff: need("feed_forward_length")?,
            n_layers: need("block_count")?,
            n_heads,
            n_kv_heads: self
                .meta_usize("llama.attention.head_count_kv")?
                .unwrap_or(n_heads),
            head_dim,
            rms_norm_eps: self
                .meta_f64("llama.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5),
            rope_theta: self.meta_f64("llama.rope.freq_base").unwrap_or(10000.0),
            rope_scaling: None,
            tied_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
            vocab_size,
            max_seq_len: self.meta_usize("llama.context_length")?.unwrap_or(2048),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_ids: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
            attention_bias: self.content.tensor_infos.contains_key("blk.0.attn_q.bias"),
            mlp_bias: self.content.tensor_infos.contains_key("blk.0.ffn_gate.bias"),
        };
        if let Some(rot) = self.meta_usize("llama.rope.dimension_count")?
            && rot != cfg.head_dim
        {
            return Err(self.config_error(format!(
                "partial RoPE (rope.dimension_count {rot} < head dim {}) is not supported",
                cfg.head_dim
            )));
        }
        cfg.validate(&self.path)?;
        Ok(cfg)
    }

    fn info(&self, p: &ParamName) -> std::result::Result<&TensorInfo, LoadError> {
        self.content
            .tensor_infos
            .get(&p.gguf)
            .ok_or_else(|| LoadError::MissingTensor {
                file: self.path.clone(),
                tensor: p.gguf.clone(),
                target: p.path.clone(),
            })
    }

    /// Check every parameter exists with the right shape (and vectors are floats).
    fn check(&self, params: &[ParamName]) -> std::result::Result<(), LoadError> {
        for p in params {
            let info = self.info(p)?;
            if info.shape.dims() != p.shape.as_slice() {
                return Err(LoadError::ShapeMismatch {
                    file: self.path.clone(),
                    tensor: p.gguf.clone(),
                    expected: p.shape.clone(),
                    found: info.shape.dims().to_vec(),
                });
            }
            // why: sizes, bounds, alignment and overlaps were checked at open (gguf_layout).
            if info.shape.dims().len() == 1 && !is_float(info.ggml_dtype) {
                return Err(LoadError::BadTensor {
                    file: self.path.clone(),
                    tensor: p.gguf.clone(),
                    message: format!(
                        "a vector stored as {:?}; GGUF writers keep vectors (norms, biases) in F32",
                        info.ggml_dtype
                    ),
                });
            }
        }
        Ok(())
    }

    /// Weight bytes of `params` as stored.
    pub fn weight_bytes(&self, params: &[ParamName]) -> usize {
        params
            .iter()
            .filter_map(|p| self.content.tensor_infos.get(&p.gguf))
            .map(tensor_bytes)
            .sum()
    }

    /// A var-builder backend over this file for the model `cfg` describes. With `dequantize`,
    /// every matrix is expanded to f32 (slower, 4–8× the memory; for comparisons).
    /// Matrices in block types candle has no SIMD kernel for ([`SLOW_BLOCKS`]) are re-quantized to
    /// `requantize` when given.
    pub fn backend(
        self,
        cfg: &LlamaConfig,
        dequantize: bool,
        requantize: Option<GgmlDType>,
    ) -> std::result::Result<GgufBackend, LoadError> {
        let params = llama_params(cfg);
        self.check(&params)?;
        let file = File::open(&self.path).map_err(|e| LoadError::io(&self.path, e))?;
        let by_path = params.into_iter().map(|p| (p.path.clone(), p)).collect();
        Ok(GgufBackend {
            gguf: self,
            file: Mutex::new(file),
            by_path,
            dequantize,
            requantize,
        })
    }
}

fn tensor_bytes(info: &TensorInfo) -> usize {
    info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()
}

/// Block types candle 0.11 computes with a scalar loop only (no AVX/NEON dot product): a matmul
/// on them is several times slower than on Q8_0, Q4_0 or the K-quants. (Q4_1 also has caramba's
/// own kernel, [`crate::ops::qmatvec`], where the CPU has AVX-512 VNNI.)
pub const SLOW_BLOCKS: &[GgmlDType] = &[GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1, GgmlDType::Q8_1];

fn is_slow(t: GgmlDType) -> bool {
    SLOW_BLOCKS.contains(&t)
}

fn is_float(t: GgmlDType) -> bool {
    matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

/// Serves a GGUF file's tensors under topology paths (see [`super::names`]).
pub struct GgufBackend {
    gguf: GgufFile,
    file: Mutex<File>,
    by_path: HashMap<String, ParamName>,
    dequantize: bool,
    requantize: Option<GgmlDType>,
}

impl GgufBackend {
    fn param(&self, path: &str) -> Result<&ParamName> {
        self.by_path.get(path).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{}: no tensor maps to `{path}`",
                self.gguf.path.display()
            ))
        })
    }

    /// The raw bytes of `p`, with q/k rows put back into HF order.
    fn raw(&self, p: &ParamName) -> Result<(GgmlDType, Vec<u8>)> {
        let info = self.gguf.info(p).map_err(candle_core::Error::wrap)?;
        let mut data = vec![0u8; tensor_bytes(info)];
        {
            let mut file = self.file.lock().expect("gguf file lock poisoned");
            file.seek(SeekFrom::Start(
                self.gguf.content.tensor_data_offset + info.offset,
            ))?;
            file.read_exact(&mut data).map_err(|e| {
                candle_core::Error::Msg(format!("{}: reading `{}`: {e}", self.gguf.path.display(), p.gguf))
            })?;
        }
        if let Some(n_heads) = p.rope_heads {
            let rows = p.shape[0];
            data = unpermute_rows(&data, n_heads, rows, data.len() / rows);
        }
        Ok((info.ggml_dtype, data))
    }

    /// The block type and bytes handed to the model: the file's, or re-quantized (see
    /// [`GgufFile::backend`]).
    fn served(&self, p: &ParamName) -> Result<(GgmlDType, Vec<u8>)> {
        let (ggml, data) = self.raw(p)?;
        match self.requantize {
            Some(target) if target != ggml && is_slow(ggml) => {
                let storage = QStorage::from_data(Cow::Owned(data), &Device::Cpu, ggml)?;
                let q = QTensor::new(storage, p.shape.clone())?;
                let r = QTensor::quantize(&q.dequantize(&Device::Cpu)?, target)?;
                Ok((target, r.data()?.into_owned()))
            }
            _ => Ok((ggml, data)),
        }
    }

    fn quantized_here(&self, path: &str) -> Option<&ParamName> {
        if self.dequantize {
            return None;
        }
        let p = self.by_path.get(path)?;
        let info = self.gguf.content.tensor_infos.get(&p.gguf)?;
        (p.shape.len() == 2 && !is_float(info.ggml_dtype)).then_some(p)
    }
}

impl SimpleBackend for GgufBackend {
    fn get(&self, s: Shape, name: &str, _h: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let p = self.param(name)?;
        if s.dims() != p.shape.as_slice() {
            candle_core::bail!(
                "{}: `{}` (for `{name}`) has shape {:?}, the model expects {:?}",
                self.gguf.path.display(),
                p.gguf,
                p.shape,
                s.dims()
            );
        }
        let (ggml, data) = self.raw(p)?;
        let q = QTensor::new(QStorage::from_data(Cow::Owned(data), &Device::Cpu, ggml)?, s)?;
        q.dequantize(&Device::Cpu)?.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        if let Some(path) = name.strip_suffix(&format!(".{GGML_BLOCKS}")) {
            let p = self
                .quantized_here(path)
                .ok_or_else(|| candle_core::Error::Msg(format!("`{path}` is not quantized")))?;
            let (_, data) = self.served(p)?;
            let n = data.len();
            return Tensor::from_vec(data, n, dev);
        }
        if let Some(path) = name.strip_suffix(&format!(".{GGML_TYPE}")) {
            let p = self.param(path)?;
            let info = self.gguf.info(p).map_err(candle_core::Error::wrap)?;
            let served = match self.requantize {
                Some(target) if target != info.ggml_dtype && is_slow(info.ggml_dtype) => target,
                _ => info.ggml_dtype,
            };
            return Tensor::new(ggml_type_id(served), dev);
        }
        let p = self.param(name)?;
        let shape = Shape::from(p.shape.clone());
        self.get(shape, name, candle_nn::Init::Const(0.0), dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        if let Some(path) = name.strip_suffix(&format!(".{GGML_BLOCKS}")) {
            return self.quantized_here(path).is_some();
        }
        if let Some(path) = name.strip_suffix(&format!(".{GGML_TYPE}")) {
            return self.quantized_here(path).is_some();
        }
        self.by_path.contains_key(name)
    }
}
