//! HF model directories: `config.json` + `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`) + `tokenizer.json`, served to the model builder under
//! topology paths (see [`super::names`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use super::names::{ParamName, llama_params};
use super::safetensors_file::SafetensorsFile;
use super::{LlamaConfig, LoadError};

/// The safetensors files of an HF directory (see [`SafetensorsFile`]), and which file holds
/// which tensor.
pub struct SafetensorsFiles {
    files: Vec<(PathBuf, SafetensorsFile)>,
    index: HashMap<String, usize>,
}

impl SafetensorsFiles {
    /// Open `model.safetensors`, or every shard named by `model.safetensors.index.json`, or every
    /// `*.safetensors` in `dir`.
    pub fn open_dir(dir: &Path) -> std::result::Result<Self, LoadError> {
        let index_path = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| LoadError::io(&index_path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| LoadError::Corrupt {
                file: index_path.clone(),
                format: "safetensors index",
                message: e.to_string(),
            })?;
            let Some(map) = v.get("weight_map").and_then(|m| m.as_object()) else {
                return Err(LoadError::Corrupt {
                    file: index_path,
                    format: "safetensors index",
                    message: "no `weight_map` object".into(),
                });
            };
            let mut shards: Vec<PathBuf> = map
                .values()
                .filter_map(|f| f.as_str())
                .map(|f| dir.join(f))
                .collect();
            shards.sort();
            shards.dedup();
            shards
        } else if dir.join("model.safetensors").exists() {
            vec![dir.join("model.safetensors")]
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| LoadError::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            found.sort();
            found
        };
        if paths.is_empty() {
            return Err(LoadError::UnknownSource {
                path: dir.into(),
                reason: "no *.safetensors file".into(),
            });
        }
        Self::open(&paths)
    }

    /// Open the given safetensors files.
    pub fn open(paths: &[PathBuf]) -> std::result::Result<Self, LoadError> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            if !path.exists() {
                return Err(LoadError::NotFound { path: path.clone() });
            }
            let st = SafetensorsFile::open(path)?;
            for (name, _) in st.tensors() {
                index.insert(name, files.len());
            }
            files.push((path.clone(), st));
        }
        Ok(Self { files, index })
    }

    /// Shape of `name` and the file holding it.
    pub fn shape_of(&self, name: &str) -> Option<(Vec<usize>, &Path)> {
        let &i = self.index.get(name)?;
        let (path, st) = &self.files[i];
        st.get(name).ok().map(|v| (v.shape().to_vec(), path.as_path()))
    }

    /// Names of every tensor in the files.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    fn describe(&self) -> PathBuf {
        match self.files.as_slice() {
            [(p, _)] => p.clone(),
            _ => self
                .files
                .first()
                .and_then(|(p, _)| p.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }

    /// Load `name` as a tensor of `dtype`.
    pub fn load(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let Some(&i) = self.index.get(name) else {
            candle_core::bail!("{}: no tensor `{name}`", self.describe().display());
        };
        let (path, st) = &self.files[i];
        let view = st.get(name)?;
        view.load(dev)
            .map_err(|e| candle_core::Error::Msg(format!("{}: tensor `{name}`: {e}", path.display())))?
            .to_dtype(dtype)
    }

    /// Bytes of the tensors named in `params` as stored.
    pub fn weight_bytes(&self, names: impl Iterator<Item = String>) -> usize {
        names
            .filter_map(|n| {
                let &i = self.index.get(&n)?;
                let v = self.files[i].1.get(&n).ok()?;
                Some(v.data().len())
            })
            .sum()
    }

    /// A backend serving the HF Llama tensors under topology paths, after checking that every
    /// parameter exists with the right shape.
    pub fn llama_backend(self, cfg: &LlamaConfig) -> std::result::Result<HfBackend, LoadError> {
        let params = llama_params(cfg);
        for p in &params {
            match self.shape_of(&p.hf) {
                None => {
                    return Err(LoadError::MissingTensor {
                        file: self.describe(),
                        tensor: p.hf.clone(),
                        target: p.path.clone(),
                    });
                }
                Some((shape, file)) if shape != p.shape => {
                    return Err(LoadError::ShapeMismatch {
                        file: file.into(),
                        tensor: p.hf.clone(),
                        expected: p.shape.clone(),
                        found: shape,
                    });
                }
                Some(_) => {}
            }
        }
        let by_path = params.into_iter().map(|p| (p.path.clone(), p)).collect();
        Ok(HfBackend { files: self, by_path })
    }
}

/// Serves HF-named safetensors under topology paths.
pub struct HfBackend {
    files: SafetensorsFiles,
    by_path: HashMap<String, ParamName>,
}

impl HfBackend {
    /// Stored bytes of every mapped parameter.
    pub fn weight_bytes(&self) -> usize {
        self.files
            .weight_bytes(self.by_path.values().map(|p| p.hf.clone()))
    }
}

impl SimpleBackend for HfBackend {
    fn get(&self, s: Shape, name: &str, _h: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        super::expect_shape(self.get_unchecked(name, dtype, dev)?, &s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let Some(p) = self.by_path.get(name) else {
            candle_core::bail!("no checkpoint tensor maps to `{name}`");
        };
        self.files.load(&p.hf, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.by_path.contains_key(name)
    }
}
