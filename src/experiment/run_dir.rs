//! A run directory is the unit of record: `runs/<manifest name>/<target>/<run id>/` with the lowered
//! manifest, the plan, the resolved model spec, environment metadata, `metrics.jsonl`,
//! `checkpoints/` and `artifacts/`. Every file here is written atomically (temp + rename).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::compiler::{Compiled, RunPlan, TargetPlan};

/// Where a run's files live.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

/// Provenance written to `run.json`: enough to know what produced the numbers.
#[derive(Debug, Clone, Serialize)]
pub struct RunMetadata {
    pub manifest: String,
    pub target: String,
    pub run_id: String,
    pub seed: u64,
    pub steps: usize,
    pub device: String,
    pub dtype: String,
    pub git_revision: Option<String>,
    pub caramba_version: &'static str,
    pub build_profile: &'static str,
    pub build_features: Vec<&'static str>,
    pub threads: usize,
    pub started_at_unix: u64,
}

impl RunDir {
    /// `runs_root/<name>/<target>/<run id>`.
    pub fn for_run(runs_root: &Path, name: &str, target: &str, run_id: &str) -> Self {
        Self {
            root: runs_root.join(name).join(target).join(run_id),
        }
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// Create the directory and write the lowered manifest, the plan, the model spec (what
    /// `--model <run dir>` loads) and `run.json`.
    pub fn write_header(
        &self,
        compiled: &Compiled,
        target: &TargetPlan,
        run: &RunPlan,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(self.artifacts())?;
        let yaml = compiled.lowered_yaml().map_err(std::io::Error::other)?;
        write_atomic(&self.root.join("manifest.lowered.yml"), yaml.as_bytes())?;
        write_atomic(&self.root.join("plan.json"), compiled.plan_json().as_bytes())?;
        write_json(&self.root.join("model_spec.json"), &target.model)?;
        // Record what the run resolves to (`cuda:0 (NVIDIA H100 …)`, `auto` → `bf16`), not only
        // what the manifest says; a device that cannot open fails the run right after this.
        let device = crate::device::parse_device(&run.train.device).ok();
        let dtype = device
            .as_ref()
            .and_then(|d| crate::device::resolve_dtype(&run.train.dtype, d).ok())
            .map_or(run.train.dtype.clone(), |t| {
                crate::device::dtype_name(t).to_string()
            });
        let meta = RunMetadata {
            manifest: compiled.manifest_path.display().to_string(),
            target: target.name.clone(),
            run_id: run.id.clone(),
            seed: run.seed,
            steps: run.steps,
            device: device.map_or(run.train.device.clone(), |d| crate::device::describe(&d)),
            dtype,
            git_revision: git_revision(),
            caramba_version: env!("CARGO_PKG_VERSION"),
            build_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            build_features: build_features(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            started_at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        write_json(&self.root.join("run.json"), &meta)
    }
}

/// Cargo features compiled into this binary.
pub fn build_features() -> Vec<&'static str> {
    let mut out = Vec::new();
    if cfg!(feature = "cuda") {
        out.push("cuda");
    }
    if cfg!(feature = "metal") {
        out.push("metal");
    }
    out
}

/// `git rev-parse HEAD` of the working directory, when it is a git checkout.
pub fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(path, text.as_bytes())
}

/// Write `bytes` to a temp file beside `path`, fsync, then rename over `path`: a reader sees the
/// old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
