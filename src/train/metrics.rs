//! `metrics.jsonl`: one JSON object per line, in step order.
//!
//! Train lines: `{"step", "loss", "lr", "grad_norm", "tokens_per_sec", "elapsed_s", "memory_gib"}`;
//! eval lines: `{"step", "val_loss", "elapsed_s"}`. `step` counts completed optimizer steps.
//! On resume from step K the file is cut back to lines with `step ≤ K`, so it never holds duplicates.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::TrainError;

pub const METRICS_FILE: &str = "metrics.jsonl";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainLine {
    pub step: usize,
    /// Mean next-token cross-entropy of the step's micro-batches (nats).
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training tokens per second since the previous train line (step time only).
    pub tokens_per_sec: f64,
    /// Training wall time so far (across resumes).
    pub elapsed_s: f64,
    /// GiB of live tensor memory after the step (`device::memory_in_use_bytes`: the CUDA pool's
    /// allocations, or the host heap in use); absent where the device reports none. Flat from
    /// step to step in a healthy run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gib: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLine {
    pub step: usize,
    /// Mean cross-entropy over `eval_iters` fixed validation batches.
    pub val_loss: f64,
    pub elapsed_s: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricLine {
    Train(TrainLine),
    Eval(EvalLine),
}

impl MetricLine {
    pub fn step(&self) -> usize {
        match self {
            Self::Train(l) => l.step,
            Self::Eval(l) => l.step,
        }
    }
}

/// Every parsable line of a metrics file.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricLine>, TrainError> {
    let text = fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// An append-only metrics writer.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Open `<run_dir>/metrics.jsonl`, keeping only lines with `step ≤ keep_through`
    /// (`None`: start empty).
    pub fn open(run_dir: &Path, keep_through: Option<usize>) -> Result<Self, TrainError> {
        let path = run_dir.join(METRICS_FILE);
        let kept = match (keep_through, path.exists()) {
            (Some(k), true) => read_metrics(&path)?
                .into_iter()
                .filter(|l| l.step() <= k)
                .collect(),
            _ => Vec::new(),
        };
        let tmp = run_dir.join(format!(".{METRICS_FILE}.tmp"));
        let mut text = String::new();
        for line in &kept {
            text.push_str(&serde_json::to_string(line).expect("metrics serialize"));
            text.push('\n');
        }
        fs::write(&tmp, text).map_err(|e| TrainError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| TrainError::io(&path, e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        Ok(Self { path, file })
    }

    pub fn write(&mut self, line: &MetricLine) -> Result<(), TrainError> {
        let mut text = serde_json::to_string(line).expect("metrics serialize");
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .map_err(|e| TrainError::io(&self.path, e))?;
        self.file.flush().map_err(|e| TrainError::io(&self.path, e))
    }
}
