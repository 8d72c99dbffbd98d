//! A run directory is the unit of record: `runs/<manifest name>/<target>/<run id>/` with the lowered
//! manifest, the plan, the resolved model spec, environment metadata, `metrics.jsonl`,
//! `checkpoints/` and `artifacts/`. Every file here is written atomically ([`crate::record`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::compiler::{Compiled, RunPlan, TargetPlan};
use crate::record::{RecordError, git_revision, write_atomic, write_json};

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
        write_atomic(&self.root.join("manifest.lowered.yml"), yaml.as_bytes())
            .map_err(RecordError::into_io)?;
        write_atomic(&self.root.join("plan.json"), compiled.plan_json().as_bytes())
            .map_err(RecordError::into_io)?;
        write_json(&self.root.join("model_spec.json"), &target.model).map_err(RecordError::into_io)?;
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
        write_json(&self.root.join("run.json"), &meta).map_err(RecordError::into_io)
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
