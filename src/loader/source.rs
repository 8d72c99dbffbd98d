//! One resolver for every place a model is named (`--model`, manifests' teachers): a string
//! becomes a [`ModelSource`].
//!
//! | written as | resolves to |
//! |---|---|
//! | `hf:org/name[@revision]` | the HF hub (cache first; `HF_HOME`, `HF_HUB_OFFLINE`) |
//! | `path/to/model.gguf` | a GGUF file |
//! | a directory with `config.json` | an HF directory (safetensors, sharded or not, + tokenizer.json) |
//! | a directory with `model_spec.json` + `model.safetensors` | a caramba checkpoint |
//! | a run directory (`checkpoints/step_N/…`) | its latest checkpoint |
//! | a directory holding one `.gguf` | that file |
//! | a fetched name (`smollm2-135m`) | its copy in the cache (see [`super::fetch`]) |
//! | `random:path/to/config.json` | an HF Llama config with seeded random weights (benchmarks of shapes whose weights are not at hand) |

use std::path::{Path, PathBuf};

use super::LoadError;
use super::fetch::{KNOWN_MODELS, cached_model};

/// Where a model's weights, config and tokenizer come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// An HF directory: `config.json` + `*.safetensors` + `tokenizer.json`.
    HfDir(PathBuf),
    /// A GGUF file (weights, config and tokenizer in one).
    Gguf(PathBuf),
    /// A repository on the HF hub.
    Hub { repo: String, revision: Option<String> },
    /// A caramba checkpoint directory: `model_spec.json` + `model.safetensors`.
    Checkpoint(PathBuf),
    /// An HF `config.json` whose architecture is built with seeded random weights.
    Random(PathBuf),
}

impl ModelSource {
    /// Resolve what a user wrote.
    pub fn parse(s: &str) -> Result<Self, LoadError> {
        if let Some(rest) = s.strip_prefix("hf:") {
            let (repo, revision) = match rest.split_once('@') {
                Some((r, rev)) => (r.to_string(), Some(rev.to_string())),
                None => (rest.to_string(), None),
            };
            if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
                return Err(LoadError::UnknownSource {
                    path: s.into(),
                    reason: "a hub model is written hf:org/name or hf:org/name@revision".into(),
                });
            }
            return Ok(Self::Hub { repo, revision });
        }
        if let Some(rest) = s.strip_prefix("random:") {
            let path = Path::new(rest);
            if !path.is_file() {
                return Err(LoadError::UnknownSource {
                    path: path.into(),
                    reason:
                        "random:PATH needs an HF config.json file (e.g. presets/configs/llama-3.2-1b.json)"
                            .into(),
                });
            }
            return Ok(Self::Random(path.into()));
        }
        let path = Path::new(s);
        if !path.exists() {
            if KNOWN_MODELS.iter().any(|m| m.name == s) {
                return cached_model(s);
            }
            return Err(LoadError::NotFound { path: path.into() });
        }
        Self::from_path(path)
    }

    /// Classify an existing file or directory.
    pub fn from_path(path: &Path) -> Result<Self, LoadError> {
        if path.is_file() {
            if path.extension().is_some_and(|e| e == "gguf") || has_gguf_magic(path) {
                return Ok(Self::Gguf(path.into()));
            }
            if let Some(dir) = path.parent().filter(|d| d.join("model_spec.json").exists()) {
                return Ok(Self::Checkpoint(dir.into()));
            }
            return Err(LoadError::UnknownSource {
                path: path.into(),
                reason: "a file must be a .gguf model (or a checkpoint's model.safetensors beside model_spec.json)".into(),
            });
        }
        if path.join("config.json").exists() {
            return Ok(Self::HfDir(path.into()));
        }
        if path.join("model_spec.json").exists() && path.join("model.safetensors").exists() {
            return Ok(Self::Checkpoint(path.into()));
        }
        if let Some(step) = latest_checkpoint(&path.join("checkpoints"))? {
            return Ok(Self::Checkpoint(step));
        }
        let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| LoadError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .collect();
        match ggufs.as_slice() {
            [one] => Ok(Self::Gguf(one.clone())),
            [] => Err(LoadError::UnknownSource {
                path: path.into(),
                reason: "no config.json, model_spec.json, checkpoints/ or .gguf file in this directory"
                    .into(),
            }),
            _ => Err(LoadError::UnknownSource {
                path: path.into(),
                reason: format!("{} .gguf files here; name one of them", ggufs.len()),
            }),
        }
    }
}

fn has_gguf_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

/// The `step_N` directory with the largest N that holds a model, under a run's `checkpoints/`.
fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>, LoadError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)
        .map_err(|e| LoadError::io(dir, e))?
        .flatten()
    {
        let p = entry.path();
        let step = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step_"))
            .and_then(|n| n.parse().ok());
        if let Some(step) = step
            && p.join("model.safetensors").exists()
            && best.as_ref().is_none_or(|(b, _)| step > *b)
        {
            best = Some((step, p));
        }
    }
    Ok(best.map(|(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names_parse_with_and_without_revision() {
        assert_eq!(
            ModelSource::parse("hf:HuggingFaceTB/SmolLM2-135M@main").unwrap(),
            ModelSource::Hub {
                repo: "HuggingFaceTB/SmolLM2-135M".into(),
                revision: Some("main".into())
            }
        );
        assert_eq!(
            ModelSource::parse("hf:a/b").unwrap(),
            ModelSource::Hub {
                repo: "a/b".into(),
                revision: None
            }
        );
        assert!(matches!(
            ModelSource::parse("hf:nope"),
            Err(LoadError::UnknownSource { .. })
        ));
    }

    #[test]
    fn missing_paths_are_not_found() {
        assert!(matches!(
            ModelSource::parse("/no/such/model.gguf"),
            Err(LoadError::NotFound { .. })
        ));
    }

    #[test]
    fn run_directories_resolve_to_their_latest_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        for step in [5, 40, 100] {
            let d = dir.path().join(format!("checkpoints/step_{step}"));
            std::fs::create_dir_all(&d).unwrap();
            if step != 100 {
                std::fs::write(d.join("model.safetensors"), b"x").unwrap();
            }
        }
        assert_eq!(
            ModelSource::parse(dir.path().to_str().unwrap()).unwrap(),
            ModelSource::Checkpoint(dir.path().join("checkpoints/step_40"))
        );
    }
}
