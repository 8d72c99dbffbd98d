//! `<run>/events.jsonl`: the original's JSONL event envelope, one JSON object per line.
//!
//! ```json
//! {"type":"metrics","ts":1765130000.25,"pid":4242,"run_id":"train","phase":"train","step":10,
//!  "data":{"metrics":{"train/loss":2.5,"train/lr":0.0003}}}
//! {"type":"orchestrator","ts":1765130001.5,"pid":4242,"run_id":"train","phase":"train","step":20,
//!  "data":{"from":"adamw","to":"lion","reason":"loss plateau"}}
//! ```
//! - `type`: `metrics` for scalars (the original's `log_metrics`), else what the caller names;
//! - `ts`: seconds since the Unix epoch; `pid`: the writing process;
//! - `phase`: for scalars, the tags' common first segment (`train` for `train/loss` and
//!   `train/lr`; empty when they differ), else the caller's;
//! - `step`: completed optimizer steps; `data`: for scalars `{"metrics": {tag: value}}` (a
//!   non-finite value is `null`), else the caller's JSON.
//!
//! This is not `metrics.jsonl` (whose lines resume reads back): it is an extra record for tools
//! and for events that are not metrics. Append-only; each line is written whole at once. On
//! resume from step K the file is cut back before the first line with `step > K` (and a torn last
//! line), as `metrics.jsonl` is, by the same function.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Instrument, InstrumentError};
use crate::train::metrics::kept_prefix;

/// File name of the event log in the run directory.
pub const EVENTS_FILE: &str = "events.jsonl";

/// One line of `events.jsonl`.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    ts: f64,
    pid: u32,
    run_id: &'a str,
    phase: &'a str,
    step: usize,
    data: &'a Value,
}

/// The append-only writer of `events.jsonl`.
pub struct EventsLog {
    path: PathBuf,
    file: File,
    run_id: String,
    pid: u32,
}

impl EventsLog {
    /// Open `<run_dir>/events.jsonl` for appending, keeping only the lines before the first one
    /// with `step > keep_through` (`None`: start empty).
    pub fn open(run_dir: &Path, run_id: &str, keep_through: Option<usize>) -> Result<Self, InstrumentError> {
        let path = run_dir.join(EVENTS_FILE);
        let keep_bytes = match (keep_through, path.exists()) {
            (Some(k), true) => {
                let bytes = fs::read(&path).map_err(|e| InstrumentError::io("read", &path, e))?;
                kept_prefix(&bytes, k)
            }
            _ => 0,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| InstrumentError::io("open", &path, e))?;
        // why: cut in place, so the kept lines stay byte for byte what was written.
        file.set_len(keep_bytes as u64)
            .map_err(|e| InstrumentError::io("truncate", &path, e))?;
        Ok(Self {
            path,
            file,
            run_id: run_id.to_string(),
            pid: std::process::id(),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, kind: &str, phase: &str, step: usize, data: &Value) -> Result<(), InstrumentError> {
        let line = Envelope {
            kind,
            ts: unix_seconds(),
            pid: self.pid,
            run_id: &self.run_id,
            phase,
            step,
            data,
        };
        let mut text = serde_json::to_string(&line).map_err(|e| {
            InstrumentError::io("serialize an event for", &self.path, std::io::Error::other(e))
        })?;
        text.push('\n');
        // why: one write per line, so a crash leaves at most one torn line, which resume drops.
        self.file
            .write_all(text.as_bytes())
            .map_err(|e| InstrumentError::io("write", &self.path, e))
    }
}

impl Instrument for EventsLog {
    fn scalars(&mut self, step: usize, scalars: &[(&str, f64)]) -> Result<(), InstrumentError> {
        let metrics: Map<String, Value> = scalars
            .iter()
            .map(|(tag, v)| (tag.to_string(), Value::from(*v)))
            .collect();
        let data = Value::Object(Map::from_iter([("metrics".to_string(), Value::Object(metrics))]));
        self.write("metrics", common_phase(scalars), step, &data)
    }

    fn event(&mut self, kind: &str, phase: &str, step: usize, data: &Value) -> Result<(), InstrumentError> {
        self.write(kind, phase, step, data)
    }

    fn flush(&mut self) -> Result<(), InstrumentError> {
        self.file
            .flush()
            .map_err(|e| InstrumentError::io("flush", &self.path, e))
    }
}

/// The first `/`-separated segment shared by every tag (`train` for `train/loss`, `train/lr`);
/// empty when the tags disagree or have none.
pub fn common_phase<'a>(scalars: &[(&'a str, f64)]) -> &'a str {
    let mut phases = scalars
        .iter()
        .map(|(tag, _)| tag.split_once('/').map_or("", |(p, _)| p));
    let Some(first) = phases.next() else { return "" };
    if phases.all(|p| p == first) { first } else { "" }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lines(path: &Path) -> Vec<Value> {
        fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    #[test]
    fn envelope_fields_and_phase() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = EventsLog::open(dir.path(), "r1", None).expect("open");
        log.scalars(10, &[("train/loss", 2.5), ("train/lr", f64::NAN)])
            .expect("scalars");
        log.scalars(10, &[("train/loss", 2.5), ("eval/val_loss", 3.0)])
            .expect("scalars");
        log.event("orchestrator", "train", 12, &json!({"to": "lion"}))
            .expect("event");
        log.flush().expect("flush");
        let got = lines(log.path());
        assert_eq!(got.len(), 3);
        let first = &got[0];
        let mut keys: Vec<&str> = first
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["data", "phase", "pid", "run_id", "step", "ts", "type"]);
        let text = fs::read_to_string(log.path()).expect("read");
        assert!(
            text.starts_with("{\"type\":\"metrics\",\"ts\":"),
            "the seed's field order: {text}"
        );
        assert_eq!(first["type"], "metrics");
        assert_eq!(first["run_id"], "r1");
        assert_eq!(first["phase"], "train");
        assert_eq!(first["step"], 10);
        assert_eq!(first["pid"], std::process::id());
        assert!(first["ts"].as_f64().is_some_and(|t| t > 1.7e9));
        assert_eq!(
            first["data"],
            json!({"metrics": {"train/loss": 2.5, "train/lr": null}})
        );
        assert_eq!(got[1]["phase"], "", "mixed prefixes have no common phase");
        assert_eq!(got[2]["type"], "orchestrator");
        assert_eq!(got[2]["data"], json!({"to": "lion"}));
    }

    #[test]
    fn resume_cuts_after_the_step_and_keeps_old_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(EVENTS_FILE);
        let old = "{\"type\":\"metrics\",\"ts\":1.0,\"pid\":1,\"run_id\":\"r\",\"phase\":\"train\",\"step\":5,\"data\":{}}\n";
        let later = "{\"type\":\"metrics\",\"ts\":2.0,\"pid\":1,\"run_id\":\"r\",\"phase\":\"train\",\"step\":6,\"data\":{}}\n{\"type\":\"met";
        fs::write(&path, format!("{old}{later}")).expect("write");
        let mut log = EventsLog::open(dir.path(), "r", Some(5)).expect("resume");
        log.scalars(6, &[("train/loss", 1.0)]).expect("append");
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(old), "kept lines are not rewritten");
        let got = lines(&path);
        assert_eq!(
            got.iter().map(|l| l["step"].as_u64()).collect::<Vec<_>>(),
            [Some(5), Some(6)]
        );
        EventsLog::open(dir.path(), "r", None).expect("fresh");
        assert!(
            fs::read(&path).expect("read").is_empty(),
            "a fresh run starts empty"
        );
    }

    #[test]
    fn phases() {
        assert_eq!(common_phase(&[]), "");
        assert_eq!(common_phase(&[("verify/eval/acc", 1.0)]), "verify");
        assert_eq!(common_phase(&[("loss", 1.0)]), "");
    }
}
