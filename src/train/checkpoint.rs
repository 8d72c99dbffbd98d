//! Checkpoints: `checkpoints/step_000123/{model.safetensors, optimizer.safetensors, state.json}`.
//!
//! Written into `checkpoints/.tmp-step_000123-<pid>/` with `state.json` last (the completeness
//! marker), then renamed into place, so a crash leaves either no directory or a complete one.
//! A directory without a parsable `state.json` whose step matches its name is incomplete and
//! ignored. After each save only the newest `keep` complete checkpoints remain.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::error::TrainError;
use super::optimizer::Optimizer;
use crate::data::SamplerState;
use crate::model::SeededVarMap;

/// Version of the checkpoint layout written by this build.
pub const FORMAT: u32 = 1;

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";

/// Everything besides tensors that an exact resume needs (`state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// Optimizer steps completed.
    pub step: usize,
    /// The run's planned number of steps (the schedule's length).
    pub total_steps: usize,
    /// The run seed.
    pub seed: u64,
    /// Fingerprint of the manifest that produced the checkpoint.
    pub fingerprint: String,
    /// `adamw`, `sgd` or `lion`.
    pub optimizer: String,
    /// Position of the training batch stream.
    pub data: SamplerState,
    /// ChaCha8 word position of the dropout RNG.
    pub dropout_word_pos: u128,
    /// Training wall time so far (seconds, across resumes).
    pub elapsed_s: f64,
    /// Training tokens consumed so far.
    pub tokens_seen: u64,
    /// Train loss of the last step.
    pub loss: f64,
    /// Progress a caller keeps beside the step (the upcycle's per-layer blockwise records);
    /// null for plain training.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub extra: serde_json::Value,
}

/// A complete checkpoint on disk.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: CheckpointState,
}

/// `step_000123`.
pub fn dir_name(step: usize) -> String {
    format!("step_{step:06}")
}

/// Save a checkpoint under `root` atomically: `vars` (every model variable) to `model.safetensors`,
/// the optimizer state beside it. Keeps the newest `keep` (at least 1). Returns its dir.
pub fn save(
    root: &Path,
    state: &CheckpointState,
    vars: &[(String, Var)],
    optimizer: &Optimizer,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    fs::create_dir_all(root).map_err(|e| TrainError::io(root, e))?;
    let name = dir_name(state.step);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let tensors: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, tmp.join(MODEL_FILE))?;
    optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
    let json = serde_json::to_string_pretty(state).expect("checkpoint state serializes");
    let state_path = tmp.join(STATE_FILE);
    let write_state = || -> std::io::Result<()> {
        let mut f = fs::File::create(&state_path)?;
        f.write_all(json.as_bytes())?;
        f.sync_all()
    };
    write_state().map_err(|e| TrainError::io(&state_path, e))?;
    let dir = root.join(&name);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    }
    fs::rename(&tmp, &dir).map_err(|e| TrainError::io(&dir, e))?;
    prune(root, keep.max(1))?;
    Ok(dir)
}

/// Complete checkpoints under `root`, newest first (none when `root` does not exist).
pub fn list_complete(root: &Path) -> Vec<Checkpoint> {
    let mut out: Vec<Checkpoint> = step_dirs(root)
        .into_iter()
        .filter_map(|(step, dir)| read_complete(step, dir))
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.state.step));
    out
}

/// The newest complete checkpoint under `root`.
pub fn latest_complete(root: &Path) -> Option<Checkpoint> {
    list_complete(root).into_iter().next()
}

fn step_dirs(root: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step_")?.parse::<usize>().ok()?;
            e.path().is_dir().then(|| (step, e.path()))
        })
        .collect()
}

fn read_complete(step: usize, dir: PathBuf) -> Option<Checkpoint> {
    let text = fs::read_to_string(dir.join(STATE_FILE)).ok()?;
    let state: CheckpointState = serde_json::from_str(&text).ok()?;
    let files_present = [MODEL_FILE, OPTIMIZER_FILE].iter().all(|f| dir.join(f).is_file());
    (state.step == step && files_present).then_some(Checkpoint { dir, state })
}

/// Remove all but the newest `keep` complete checkpoints, incomplete step dirs and stale temp dirs.
fn prune(root: &Path, keep: usize) -> Result<(), TrainError> {
    let complete: Vec<PathBuf> = list_complete(root).into_iter().map(|c| c.dir).collect();
    let mut doomed: Vec<PathBuf> = complete.iter().skip(keep).cloned().collect();
    doomed.extend(
        step_dirs(root)
            .into_iter()
            .map(|(_, d)| d)
            .filter(|d| !complete.contains(d)),
    );
    if let Ok(entries) = fs::read_dir(root) {
        doomed.extend(
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-step_"))
                .map(|e| e.path()),
        );
    }
    for dir in doomed {
        fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    }
    Ok(())
}

impl Checkpoint {
    /// Overwrite every variable of `vars` with this checkpoint's weights.
    pub fn load_model(&self, vars: &SeededVarMap) -> Result<(), TrainError> {
        let device = vars
            .named_vars()
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let tensors = candle_core::safetensors::load(self.dir.join(MODEL_FILE), &device).map_err(|e| {
            TrainError::Checkpoint {
                dir: self.dir.clone(),
                reason: e.to_string(),
            }
        })?;
        vars.assign_all(&tensors).map_err(|e| TrainError::Checkpoint {
            dir: self.dir.clone(),
            reason: e.to_string(),
        })
    }

    /// Restore `optimizer` (moments and step count) from this checkpoint.
    pub fn load_optimizer(&self, optimizer: &mut Optimizer) -> Result<(), TrainError> {
        optimizer
            .load(&self.dir.join(OPTIMIZER_FILE))
            .map_err(|e| TrainError::Checkpoint {
                dir: self.dir.clone(),
                reason: e.to_string(),
            })?;
        if optimizer.steps() != self.state.step {
            return Err(TrainError::Checkpoint {
                dir: self.dir.clone(),
                reason: format!(
                    "optimizer state is at step {}, state.json at {}",
                    optimizer.steps(),
                    self.state.step
                ),
            });
        }
        Ok(())
    }
}
