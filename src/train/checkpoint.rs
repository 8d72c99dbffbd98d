//! Checkpoints: `checkpoints/step_000123/{model.safetensors, optimizer.safetensors, state.json}`,
//! and `adagc.safetensors` when the run clips with AdaGC.
//!
//! Written into `checkpoints/.tmp-step_000123-<pid>/` with `state.json` last (the completeness
//! marker, holding the SHA-256 of the two tensor files), every file and the directory fsynced,
//! then renamed into place (and the parent fsynced), so a crash leaves either no directory or a
//! complete one. A failed save removes its temporary directory; stale ones go at the next start.
//!
//! A step directory whose `state.json` is missing, unparsable or names another step is
//! *unreadable*: it is never loaded and never pruned (its weights may be the only copy), and when
//! no checkpoint is readable a resume refuses instead of starting over ([`resumable`]). Before
//! loading, [`Checkpoint::verify`] checks the files against their recorded hashes. After each
//! save only the newest `keep` readable checkpoints remain.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::adagc::AdaGc;
use super::error::TrainError;
use super::optimizer::Optimizer;
use crate::data::SamplerState;
use crate::model::SeededVarMap;

/// Version of the checkpoint layout written by this build (2: `state.json` lists file hashes;
/// format-1 checkpoints still load, unverified).
pub const FORMAT: u32 = 2;

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
/// The AdaGC clipping state (`clip: adagc` runs only).
pub const ADAGC_FILE: &str = "adagc.safetensors";

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
    /// `adamw`, `sgd`, `lion`, `swats` or `pidao`.
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
    /// SHA-256 (hex, as `sha256sum` prints it) of each tensor file, by file name. [`save`] fills
    /// it (whatever the caller passed); empty in format-1 checkpoints, which load unverified.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
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
/// the optimizer state beside it, their hashes in `state.json`. Keeps the newest `keep` (at
/// least 1). Returns its dir. On failure (a full disk) nothing of this save remains.
pub fn save(
    root: &Path,
    state: &CheckpointState,
    vars: &[(String, Var)],
    optimizer: &Optimizer,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    save_with_clip(root, state, vars, optimizer, None, keep)
}

/// [`save`], with the AdaGC state (`adagc.safetensors`, hashed like the others) when `adagc` is
/// given — pass `GradClip::adagc()`.
pub fn save_with_clip(
    root: &Path,
    state: &CheckpointState,
    vars: &[(String, Var)],
    optimizer: &Optimizer,
    adagc: Option<&AdaGc>,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    fs::create_dir_all(root).map_err(|e| TrainError::io(root, e))?;
    let name = dir_name(state.step);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    let written = write_files(&tmp, state, vars, optimizer, adagc);
    if written.is_err() {
        // why: a failed save (typically a full disk) must not leave a temp directory per attempt.
        crate::record::discard(&tmp);
    }
    written?;
    let dir = root.join(&name);
    let placed = if dir.exists() {
        set_aside_or_remove(&dir)
    } else {
        Ok(())
    }
    .and_then(|()| fs::rename(&tmp, &dir).map_err(|e| TrainError::io(&dir, e)));
    if placed.is_err() {
        crate::record::discard(&tmp);
    }
    placed?;
    crate::record::sync_dir(root).map_err(record_io)?;
    prune(root, keep.max(1))?;
    Ok(dir)
}

/// The files of a checkpoint into the fresh directory `tmp`, each fsynced, `state.json` last.
fn write_files(
    tmp: &Path,
    state: &CheckpointState,
    vars: &[(String, Var)],
    optimizer: &Optimizer,
    adagc: Option<&AdaGc>,
) -> Result<(), TrainError> {
    fs::create_dir_all(tmp).map_err(|e| TrainError::io(tmp, e))?;
    let tensors: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, tmp.join(MODEL_FILE))?;
    optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
    if let Some(adagc) = adagc {
        adagc.save(&tmp.join(ADAGC_FILE))?;
    }
    let mut state = state.clone();
    state.files.clear();
    for file in [MODEL_FILE, OPTIMIZER_FILE]
        .into_iter()
        .chain(adagc.map(|_| ADAGC_FILE))
    {
        let path = tmp.join(file);
        fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| TrainError::io(&path, e))?;
        let hash = crate::record::sha256_file(&path).map_err(record_io)?;
        state.files.insert(file.to_string(), hash);
    }
    let json = serde_json::to_string_pretty(&state).expect("checkpoint state serializes");
    let state_path = tmp.join(STATE_FILE);
    let write_state = || -> std::io::Result<()> {
        let mut f = fs::File::create(&state_path)?;
        f.write_all(json.as_bytes())?;
        f.sync_all()
    };
    write_state().map_err(|e| TrainError::io(&state_path, e))?;
    crate::record::sync_dir(tmp).map_err(record_io)
}

/// Make room for a new checkpoint of the same step: a readable old one is removed (it failed to
/// load, or the new one would not be written); an unreadable one is renamed to
/// `step_000123.unreadable-<pid>` and kept, since its weights may be intact.
fn set_aside_or_remove(dir: &Path) -> Result<(), TrainError> {
    let readable = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("step_"))
        .and_then(|s| s.parse::<usize>().ok())
        .is_some_and(|step| read_complete(step, dir.to_path_buf()).is_ok());
    if readable {
        return fs::remove_dir_all(dir).map_err(|e| TrainError::io(dir, e));
    }
    let aside = dir.with_file_name(format!(
        "{}.unreadable-{}",
        dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    tracing::warn!(
        "keeping the unreadable checkpoint {} as {}",
        dir.display(),
        aside.display()
    );
    fs::rename(dir, &aside).map_err(|e| TrainError::io(&aside, e))
}

fn record_io(e: crate::record::RecordError) -> TrainError {
    TrainError::Record(e)
}

/// A step directory that is not a loadable checkpoint, and why.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub dir: PathBuf,
    pub reason: String,
}

/// What a checkpoint root holds: readable checkpoints (newest first) and unreadable step dirs.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub complete: Vec<Checkpoint>,
    pub unreadable: Vec<Unreadable>,
}

/// Every step directory under `root`, readable or not (empty when `root` does not exist).
pub fn scan(root: &Path) -> Scan {
    let mut out = Scan::default();
    for (step, dir) in step_dirs(root) {
        match read_complete(step, dir.clone()) {
            Ok(c) => out.complete.push(c),
            Err(reason) => out.unreadable.push(Unreadable { dir, reason }),
        }
    }
    out.complete.sort_by_key(|c| std::cmp::Reverse(c.state.step));
    out.unreadable.sort_by(|a, b| b.dir.cmp(&a.dir));
    out
}

/// The checkpoints to try for a resume, newest first: empty when there are no step directories
/// (a fresh start); an error naming the files when there are some but none is readable, since
/// starting over would discard them. Unreadable ones newer than a readable one are skipped with
/// a warning.
pub fn resumable(root: &Path) -> Result<Vec<Checkpoint>, TrainError> {
    let Scan { complete, unreadable } = scan(root);
    if complete.is_empty() && !unreadable.is_empty() {
        return Err(TrainError::UnreadableCheckpoints {
            root: root.to_path_buf(),
            problems: unreadable
                .iter()
                .map(|u| format!("{}: {}", u.dir.join(STATE_FILE).display(), u.reason))
                .collect(),
        });
    }
    for u in &unreadable {
        tracing::warn!("skipping unreadable checkpoint {}: {}", u.dir.display(), u.reason);
    }
    Ok(complete)
}

/// Remove `.tmp-step_*` directories under `root`: saves that never finished. Call with the run
/// directory locked (no other process is writing one).
pub fn remove_stale_temps(root: &Path) -> Result<(), TrainError> {
    let Ok(entries) = fs::read_dir(root) else {
        return Ok(());
    };
    for e in entries.filter_map(|e| e.ok()) {
        if e.file_name().to_string_lossy().starts_with(".tmp-step_") {
            let path = e.path();
            tracing::debug!("removing the unfinished checkpoint {}", path.display());
            fs::remove_dir_all(&path).map_err(|err| TrainError::io(&path, err))?;
        }
    }
    Ok(())
}

/// Complete checkpoints under `root`, newest first (none when `root` does not exist).
pub fn list_complete(root: &Path) -> Vec<Checkpoint> {
    scan(root).complete
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

fn read_complete(step: usize, dir: PathBuf) -> Result<Checkpoint, String> {
    let text = fs::read_to_string(dir.join(STATE_FILE)).map_err(|e| e.to_string())?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if state.step != step {
        return Err(format!("it records step {}", state.step));
    }
    if let Some(f) = [MODEL_FILE, OPTIMIZER_FILE]
        .iter()
        .find(|f| !dir.join(f).is_file())
    {
        return Err(format!("{f} is missing"));
    }
    Ok(Checkpoint { dir, state })
}

/// Remove all but the newest `keep` readable checkpoints. Unreadable step dirs stay: what could
/// not be read is never deleted.
fn prune(root: &Path, keep: usize) -> Result<(), TrainError> {
    for ck in scan(root).complete.into_iter().skip(keep) {
        fs::remove_dir_all(&ck.dir).map_err(|e| TrainError::io(&ck.dir, e))?;
    }
    Ok(())
}

impl Checkpoint {
    /// Check each file against the hash `state.json` recorded for it (format-1 checkpoints have
    /// none and pass). Call before loading anything, so a corrupt checkpoint changes no weight.
    pub fn verify(&self) -> Result<(), TrainError> {
        for (file, expected) in &self.state.files {
            let path = self.dir.join(file);
            let found = crate::record::sha256_file(&path).map_err(|e| TrainError::Checkpoint {
                dir: self.dir.clone(),
                reason: e.to_string(),
            })?;
            if &found != expected {
                return Err(TrainError::Checkpoint {
                    dir: self.dir.clone(),
                    reason: format!("{file} is corrupt (sha256 {found}, state.json records {expected})"),
                });
            }
        }
        Ok(())
    }

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

    /// Restore AdaGC's EMAs and step count from this checkpoint (written by [`save_with_clip`]).
    pub fn load_adagc(&self, adagc: &mut AdaGc) -> Result<(), TrainError> {
        let fail = |reason: String| TrainError::Checkpoint {
            dir: self.dir.clone(),
            reason,
        };
        let path = self.dir.join(ADAGC_FILE);
        if !path.is_file() {
            return Err(fail(format!(
                "{ADAGC_FILE} is missing (the run clips with AdaGC)"
            )));
        }
        adagc.load(&path).map_err(|e| fail(e.to_string()))?;
        if adagc.steps() != self.state.step {
            return Err(fail(format!(
                "AdaGC state is at step {}, state.json at {}",
                adagc.steps(),
                self.state.step
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::train::adagc::AdaGcConfig;
    use crate::train::spec::TrainSpec;

    fn state(step: usize) -> CheckpointState {
        CheckpointState {
            format: FORMAT,
            step,
            total_steps: 10,
            seed: 1,
            fingerprint: "f".into(),
            optimizer: "adamw".into(),
            data: SamplerState { seed: 1, word_pos: 0 },
            dropout_word_pos: 0,
            elapsed_s: 0.0,
            tokens_seen: 0,
            loss: 1.0,
            extra: serde_json::Value::Null,
            files: Default::default(),
        }
    }

    #[test]
    fn the_adagc_state_is_saved_hashed_and_restored() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let var = Var::from_tensor(&Tensor::new(&[[0.5f32, -1.0]], &Device::Cpu)?)?;
        let vars = vec![("w".to_string(), var)];
        let mut optimizer = Optimizer::new(&TrainSpec::default(), vars.clone())?;
        let cfg = AdaGcConfig {
            beta: 0.9,
            lambda: 1.05,
            warmup: 0,
            max_norm: 1.0,
        };
        let mut adagc = AdaGc::new(cfg);
        let mut grads = vec![Some(Tensor::new(&[[0.3f32, 0.4]], &Device::Cpu)?)];
        adagc.clip(&mut grads, &vars)?;
        optimizer.step(&grads, 1e-3)?;

        let saved = save_with_clip(dir.path(), &state(1), &vars, &optimizer, Some(&adagc), 2)?;
        let ck = latest_complete(dir.path()).ok_or("a checkpoint")?;
        assert_eq!(ck.dir, saved);
        assert!(ck.state.files.contains_key(ADAGC_FILE), "hashed like the others");
        ck.verify()?;
        let mut restored = AdaGc::new(cfg);
        ck.load_adagc(&mut restored)?;
        assert_eq!(restored.steps(), 1);
        assert_eq!(
            restored.ema("w").map(f64::to_bits),
            adagc.ema("w").map(f64::to_bits)
        );

        // A checkpoint without the file (written by plain `save`) refuses an AdaGC resume.
        save(dir.path(), &state(2), &vars, &optimizer, 2)?;
        let ck = latest_complete(dir.path()).ok_or("a checkpoint")?;
        assert!(!dir.path().join(dir_name(2)).join(ADAGC_FILE).exists());
        let err = ck.load_adagc(&mut AdaGc::new(cfg)).err().map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.contains("missing")), "{err:?}");
        // A corrupt AdaGC file fails verification.
        std::fs::write(saved.join(ADAGC_FILE), b"junk")?;
        let old = list_complete(dir.path())
            .into_iter()
            .find(|c| c.state.step == 1)
            .ok_or("step 1")?;
        assert!(old.verify().is_err());
        Ok(())
    }
}
