//! Instrumentation: where a run's scalars and events go besides `metrics.jsonl`.
//!
//! `defaults.logging.instrument` (or a run's `train.instrument`) lists the sinks
//! ([`InstrumentKind`]; a list or the original's string `"rich tb+live"`):
//!
//! | sink          | output                                                    | when            |
//! |---------------|-----------------------------------------------------------|-----------------|
//! | `jsonl`       | `<run>/events.jsonl`, the original's envelope ([`events`]) | always          |
//! | `console`     | log lines for events and non-train scalars ([`console`])  | always          |
//! | `tensorboard` | `<run>/tb/<run_id>/events.out.tfevents.*` ([`tensorboard`]) | when listed     |
//! | `live`        | a loss sparkline under the progress bar ([`live`])         | listed, and a terminal |
//!
//! `jsonl` and `console` are on whether listed or not, as in the original (whose JSONL log was
//! always on and whose `rich` console was the default); naming them is accepted. W&B and HDF5 are
//! not supported (see [`kind`]).
//!
//! The trainer opens [`Instruments`] with [`open`] once it knows the resume step, logs each
//! metrics line through [`Instruments::metrics`] (tags in [`tags`]), other scalars and events
//! through the [`Instrument`] methods, and flushes at checkpoints and at the end.

pub mod console;
pub mod crc32c;
pub mod error;
pub mod events;
pub mod kind;
pub mod live;
pub mod proto;
pub mod tags;
pub mod tensorboard;
pub mod tfrecord;

use std::path::{Path, PathBuf};

pub use error::InstrumentError;
pub use kind::{InstrumentKind, NameError, deserialize_list, deserialize_optional_list};
pub use tags::metric_scalars;

use crate::train::metrics::MetricLine;

/// A sink for a run's scalars besides metrics.jsonl.
pub trait Instrument {
    /// Scalars at a step, tags like "train/loss" (phase prefix decided by the caller).
    fn scalars(&mut self, step: usize, scalars: &[(&str, f64)]) -> Result<(), InstrumentError>;
    /// A structured event (orchestrator decision, verify result…): type, phase, step, data.
    fn event(
        &mut self,
        kind: &str,
        phase: &str,
        step: usize,
        data: &serde_json::Value,
    ) -> Result<(), InstrumentError> {
        let _ = (kind, phase, step, data);
        Ok(())
    }
    /// Push buffered output to disk (TensorBoard buffers; the JSONL log writes each line whole).
    fn flush(&mut self) -> Result<(), InstrumentError>;
}

/// The open sinks of a run: each call goes to every one of them.
pub struct Instruments {
    sinks: Vec<(InstrumentKind, Box<dyn Instrument + Send>)>,
    tensorboard_dir: Option<PathBuf>,
}

impl Instruments {
    /// No sinks at all (for callers that log nowhere, and tests).
    pub fn none() -> Self {
        Self {
            sinks: Vec::new(),
            tensorboard_dir: None,
        }
    }

    /// The sinks open, in the order they are called.
    pub fn kinds(&self) -> Vec<InstrumentKind> {
        self.sinks.iter().map(|(k, _)| *k).collect()
    }

    /// `<run_dir>/tb/<run_id>` when TensorBoard files are written.
    pub fn tensorboard_dir(&self) -> Option<&Path> {
        self.tensorboard_dir.as_deref()
    }

    /// Log a `metrics.jsonl` line under the standard tags ([`tags`]) at its step.
    pub fn metrics(&mut self, line: &MetricLine) -> Result<(), InstrumentError> {
        match line {
            MetricLine::Decision(d) => {
                let data = serde_json::to_value(&d.decision).unwrap_or(serde_json::Value::Null);
                self.event("orchestrator", "train", d.step, &data)
            }
            _ => self.scalars(line.step(), &metric_scalars(line)),
        }
    }

    /// Call `f` on every sink, all of them even after a failure; the first error is returned.
    fn each(
        &mut self,
        mut f: impl FnMut(&mut (dyn Instrument + Send)) -> Result<(), InstrumentError>,
    ) -> Result<(), InstrumentError> {
        let mut first = None;
        for (_, sink) in &mut self.sinks {
            if let Err(e) = f(sink.as_mut()) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Instrument for Instruments {
    fn scalars(&mut self, step: usize, scalars: &[(&str, f64)]) -> Result<(), InstrumentError> {
        self.each(|s| s.scalars(step, scalars))
    }

    fn event(
        &mut self,
        kind: &str,
        phase: &str,
        step: usize,
        data: &serde_json::Value,
    ) -> Result<(), InstrumentError> {
        self.each(|s| s.event(kind, phase, step, data))
    }

    fn flush(&mut self) -> Result<(), InstrumentError> {
        self.each(|s| s.flush())
    }
}

/// Open the sinks of a run in `run_dir` (which must exist): `events.jsonl` and the console always,
/// TensorBoard and the live plot when `kinds` lists them (the live plot only when `interactive`:
/// pass `std::io::stderr().is_terminal()`, false under `--json`). `resumed_from = Some(k)`: the
/// run continues after checkpoint step `k`, and the files drop what they hold after step `k`;
/// `None`: a fresh start, they start empty. Open it after the progress bar, so that the live plot
/// draws below it.
pub fn open(
    kinds: &[InstrumentKind],
    run_dir: &Path,
    run_id: &str,
    resumed_from: Option<usize>,
    interactive: bool,
) -> Result<Instruments, InstrumentError> {
    let mut out = Instruments::none();
    let events = events::EventsLog::open(run_dir, run_id, resumed_from)?;
    out.sinks.push((InstrumentKind::Jsonl, Box::new(events)));
    out.sinks
        .push((InstrumentKind::Console, Box::new(console::ConsoleLog)));
    if kinds.contains(&InstrumentKind::Tensorboard) {
        let tb = tensorboard::TensorBoardWriter::open(run_dir, run_id, resumed_from)?;
        tracing::info!(
            "TensorBoard: {} (view with `tensorboard --logdir {}`)",
            tb.path().display(),
            run_dir.join(tensorboard::TB_DIR).display()
        );
        out.tensorboard_dir = Some(tb.dir().to_path_buf());
        out.sinks.push((InstrumentKind::Tensorboard, Box::new(tb)));
    }
    if kinds.contains(&InstrumentKind::Live) {
        if interactive {
            out.sinks
                .push((InstrumentKind::Live, Box::new(live::LivePlot::new())));
        } else {
            tracing::debug!("live loss plot off: stderr is not a terminal");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that fails every call, to check that the others are still called.
    struct Failing;
    impl Instrument for Failing {
        fn scalars(&mut self, _: usize, _: &[(&str, f64)]) -> Result<(), InstrumentError> {
            Err(InstrumentError::Unsupported { name: "x".into() })
        }
        fn flush(&mut self) -> Result<(), InstrumentError> {
            Ok(())
        }
    }

    #[test]
    fn jsonl_and_console_always_tensorboard_and_live_when_asked() {
        use InstrumentKind::*;
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = open(&[], dir.path(), "r", None, true).expect("open");
        assert_eq!(plain.kinds(), [Jsonl, Console]);
        assert!(plain.tensorboard_dir().is_none());
        let all = open(&[Tensorboard, Live], dir.path(), "r", None, true).expect("open");
        assert_eq!(all.kinds(), [Jsonl, Console, Tensorboard, Live]);
        assert_eq!(
            all.tensorboard_dir(),
            Some(dir.path().join("tb").join("r").as_path())
        );
        let batch = open(&[Live, Jsonl], dir.path(), "r", None, false).expect("open");
        assert_eq!(batch.kinds(), [Jsonl, Console], "no live plot without a terminal");
    }

    #[test]
    fn every_sink_is_called_and_the_first_error_returned() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ins = open(&[], dir.path(), "r", None, false).expect("open");
        ins.sinks.insert(0, (InstrumentKind::Console, Box::new(Failing)));
        let err = ins.scalars(3, &[("train/loss", 1.0)]).expect_err("fails");
        assert!(matches!(err, InstrumentError::Unsupported { .. }));
        ins.flush().expect("flush");
        let text = std::fs::read_to_string(dir.path().join(events::EVENTS_FILE)).expect("read");
        assert_eq!(
            text.lines().count(),
            1,
            "the JSONL sink after the failing one still wrote"
        );
    }
}
