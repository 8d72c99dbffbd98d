//! `RunError`: why `caramba run` stopped, with the exit code it maps to (2: bad manifest or
//! target, 1: a run failed, 130: interrupted — a training error says which).

/// A failed `caramba run`: the rendered report and its exit code.
#[derive(Debug)]
pub struct RunError {
    /// 1: the run failed; 2: bad manifest or usage; 130: interrupted.
    pub code: u8,
    pub report: miette::Report,
}

impl RunError {
    /// A bad manifest, target or input (exit code 2).
    pub fn usage(report: impl Into<miette::Report>) -> Self {
        Self {
            code: 2,
            report: report.into(),
        }
    }

    /// A run that started and failed (exit code 1).
    pub fn failed(report: impl Into<miette::Report>) -> Self {
        Self {
            code: 1,
            report: report.into(),
        }
    }
}
