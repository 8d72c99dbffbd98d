//! `metrics.jsonl`: one JSON object per line, in step order.
//!
//! Train lines: `{"step", "loss", "lr", "grad_norm", "tokens_per_sec", "elapsed_s", "memory_gib",
//! "aux_loss"}` (the last two only where there is one);
//! eval lines: `{"step", "val_loss", "elapsed_s"}`; an orchestrated run's decisions:
//! `{"step", "decision": {reason, phase, from, to, candidates, trials, …}}`. `step` counts
//! completed optimizer steps.
//! On resume from step K the file is cut back, at a byte offset, before the first line with
//! `step > K` (or a torn last line), so it never holds duplicates; the lines kept are never
//! rewritten, so they stay byte for byte what was logged.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::TrainError;
use super::orchestrator::Decision;

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
    /// Mean over the step's micro-batches of the weighted auxiliary losses the layers added to
    /// the training loss (a MoE layer's load balancing); absent for a model without any. The
    /// optimised loss is `loss + aux_loss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux_loss: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLine {
    pub step: usize,
    /// Mean cross-entropy over `eval_iters` fixed validation batches (a classifier: the whole
    /// val split).
    pub val_loss: f64,
    pub elapsed_s: f64,
    /// A classifier's accuracy on the whole val split; absent for language models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
}

/// An orchestrator decision (see `train::orchestrator`), logged at the step it branched from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionLine {
    pub step: usize,
    pub decision: Decision,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricLine {
    Train(TrainLine),
    Eval(EvalLine),
    Decision(DecisionLine),
}

impl MetricLine {
    pub fn step(&self) -> usize {
        match self {
            Self::Train(l) => l.step,
            Self::Eval(l) => l.step,
            Self::Decision(l) => l.step,
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
    /// Open `<run_dir>/metrics.jsonl` for appending, keeping only the lines before the first one
    /// with `step > keep_through` (`None`: start empty).
    pub fn open(run_dir: &Path, keep_through: Option<usize>) -> Result<Self, TrainError> {
        let path = run_dir.join(METRICS_FILE);
        let keep_bytes = match (keep_through, path.exists()) {
            (Some(k), true) => {
                let bytes = fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
                kept_prefix(&bytes, k)
            }
            _ => 0,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        // why: truncating in place keeps the old lines' bytes; re-serializing them changed the
        // last digit of floats and dropped fields this build does not know.
        file.set_len(keep_bytes as u64)
            .and_then(|()| file.sync_all())
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

/// Length of the prefix of `bytes` made of whole lines (each ending in `\n`) that come before the
/// first line whose `step` is above `keep_through`. Lines that do not parse are kept (they are
/// not ours to drop) unless they are the torn end of the file. Any JSON-lines file with a top-level
/// `step` can be cut this way (`events.jsonl` of [`crate::instrument`] is).
pub(crate) fn kept_prefix(bytes: &[u8], keep_through: usize) -> usize {
    #[derive(Deserialize)]
    struct Step {
        step: usize,
    }
    let mut end = 0;
    while let Some(len) = bytes[end..].iter().position(|&b| b == b'\n') {
        let line = &bytes[end..end + len];
        if serde_json::from_slice::<Step>(line).is_ok_and(|l| l.step > keep_through) {
            break;
        }
        end += len + 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_keeps_old_lines_byte_for_byte_and_cuts_at_the_step() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(METRICS_FILE);
        // Lines as another build might have written them: exponent floats, an extra field,
        // spacing; then a line past the resume step and a torn tail.
        let lr: f64 = rand::random::<f64>() * 1e-3;
        let old = format!(
            "{{\"step\": 1, \"loss\": 5.5e0, \"lr\": {lr:e}, \"grad_norm\": 1.0, \"tokens_per_sec\": 10, \"elapsed_s\": 0.1, \"note\": \"x\"}}\n\
             {{\"step\":2,\"val_loss\":4.25,\"elapsed_s\":0.2}}\n"
        );
        let later = "{\"step\":3,\"val_loss\":4.0,\"elapsed_s\":0.3}\n{\"step\":2,\"val";
        fs::write(&path, format!("{old}{later}")).expect("write");
        let mut log = MetricsLog::open(dir.path(), Some(2)).expect("open");
        let line = MetricLine::Eval(EvalLine {
            step: 3,
            val_loss: rand::random(),
            elapsed_s: 0.5,
            val_accuracy: None,
        });
        log.write(&line).expect("append");
        let text = fs::read_to_string(&path).expect("read");
        let (kept, appended) = text.split_at(old.len());
        assert_eq!(kept, old, "kept lines must not be rewritten");
        assert_eq!(
            serde_json::from_str::<MetricLine>(appended.trim_end()).expect("parse"),
            line
        );
        // A fresh start empties the file.
        MetricsLog::open(dir.path(), None).expect("open fresh");
        assert!(fs::read(&path).expect("read").is_empty());
    }
}
