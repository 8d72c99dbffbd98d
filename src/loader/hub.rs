//! Models on the Hugging Face hub (`hf:org/name[@revision]`), through `hf-hub`'s sync API.
//!
//! Cache first: files already in the hub cache (`$HF_HOME/hub`, default
//! `~/.cache/huggingface/hub`) are used without touching the network; `HF_HUB_OFFLINE=1` never
//! touches it. The result is the snapshot directory, loaded as an HF directory.

use std::path::PathBuf;

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use super::LoadError;

/// Files an HF Llama directory needs (weights are added from the index when sharded).
const REQUIRED: &[&str] = &["config.json", "tokenizer.json"];
const OPTIONAL: &[&str] = &["tokenizer_config.json", "generation_config.json"];

fn repo(repo: &str, revision: Option<&str>) -> Repo {
    match revision {
        Some(rev) => Repo::with_revision(repo.into(), RepoType::Model, rev.into()),
        None => Repo::model(repo.into()),
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The local snapshot directory of `repo` with config, tokenizer and weights present, downloading
/// what the cache lacks unless offline.
pub fn snapshot(repo_id: &str, revision: Option<&str>) -> Result<PathBuf, LoadError> {
    if let Some(dir) = cached_snapshot(repo_id, revision) {
        return Ok(dir);
    }
    if offline() {
        return Err(LoadError::HubUnreachable {
            repo: repo_id.into(),
            message: "HF_HUB_OFFLINE is set and the hub cache does not hold this model".into(),
        });
    }
    let api = ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| LoadError::HubUnreachable {
            repo: repo_id.into(),
            message: e.to_string(),
        })?;
    let api_repo = api.repo(repo(repo_id, revision));
    let get = |file: &str| -> Result<PathBuf, LoadError> {
        api_repo.get(file).map_err(|e| hub_error(repo_id, file, e))
    };
    let config = get("config.json")?;
    get("tokenizer.json")?;
    for f in OPTIONAL {
        let _ = api_repo.get(f);
    }
    match api_repo.get("model.safetensors.index.json") {
        Ok(index) => {
            for shard in shards(&index)? {
                get(&shard)?;
            }
        }
        Err(_) => {
            get("model.safetensors")?;
        }
    }
    Ok(config.parent().map(PathBuf::from).unwrap_or_default())
}

/// The snapshot directory when the cache already holds everything needed.
pub fn cached_snapshot(repo_id: &str, revision: Option<&str>) -> Option<PathBuf> {
    let cache = Cache::from_env().repo(repo(repo_id, revision));
    let config = cache.get("config.json")?;
    for f in REQUIRED {
        cache.get(f)?;
    }
    match cache.get("model.safetensors.index.json") {
        Some(index) => {
            for shard in shards(&index).ok()? {
                cache.get(&shard)?;
            }
        }
        None => {
            cache.get("model.safetensors")?;
        }
    }
    config.parent().map(PathBuf::from)
}

fn shards(index: &std::path::Path) -> Result<Vec<String>, LoadError> {
    let text = std::fs::read_to_string(index).map_err(|e| LoadError::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| LoadError::Corrupt {
        file: index.into(),
        format: "safetensors index",
        message: e.to_string(),
    })?;
    let mut out: Vec<String> = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .map(|m| m.values().filter_map(|f| f.as_str().map(String::from)).collect())
        .unwrap_or_default();
    out.sort();
    out.dedup();
    Ok(out)
}

fn hub_error(repo: &str, file: &str, e: ApiError) -> LoadError {
    let message = e.to_string();
    if message.contains("404") || message.contains("Not Found") {
        LoadError::HubMissing {
            repo: repo.into(),
            file: file.into(),
            message,
        }
    } else {
        LoadError::HubUnreachable {
            repo: repo.into(),
            message,
        }
    }
}
