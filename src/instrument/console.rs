//! The console instrument: events (orchestrator decisions, verify results, …) and scalars that the
//! trainer does not print itself (anything outside `train/` and `eval/`, e.g. `verify/*`,
//! `bench/*`) as log lines on stderr, through `tracing` (so `-q` silences them and they print
//! above the progress bars).
//!
//! ```text
//! INFO step=200 verify/eval/accuracy=0.9120 verify/kvcache/max_abs=1.250e-5
//! INFO step=300 phase=train orchestrator: {"from":"adamw","to":"lion"}
//! ```

use serde_json::Value;

use super::{Instrument, InstrumentError};

/// Log lines for events and for the scalars the trainer does not log.
#[derive(Debug, Default)]
pub struct ConsoleLog;

/// Tag prefixes whose scalars the trainer's own log lines already show.
const TRAINER_LOGGED: [&str; 2] = ["train/", "eval/"];

/// `tag=value` with 4 decimals, or 4 significant digits in scientific form for very small or
/// large magnitudes.
pub fn format_scalar(tag: &str, v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && a.is_finite() && !(1e-3..1e5).contains(&a) {
        format!("{tag}={v:.3e}")
    } else {
        format!("{tag}={v:.4}")
    }
}

impl Instrument for ConsoleLog {
    fn scalars(&mut self, step: usize, scalars: &[(&str, f64)]) -> Result<(), InstrumentError> {
        let shown: Vec<String> = scalars
            .iter()
            .filter(|(tag, _)| !TRAINER_LOGGED.iter().any(|p| tag.starts_with(p)))
            .map(|(tag, v)| format_scalar(tag, *v))
            .collect();
        if !shown.is_empty() {
            tracing::info!(step, "{}", shown.join(" "));
        }
        Ok(())
    }

    fn event(&mut self, kind: &str, phase: &str, step: usize, data: &Value) -> Result<(), InstrumentError> {
        tracing::info!(step, phase, "{kind}: {data}");
        Ok(())
    }

    fn flush(&mut self) -> Result<(), InstrumentError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_formats() {
        assert_eq!(format_scalar("a", 0.912), "a=0.9120");
        assert_eq!(format_scalar("a", 0.0), "a=0.0000");
        assert_eq!(format_scalar("a", 1.25e-5), "a=1.250e-5");
        assert_eq!(format_scalar("a", 123456.0), "a=1.235e5");
        assert_eq!(format_scalar("a", f64::NAN), "a=NaN");
    }
}
