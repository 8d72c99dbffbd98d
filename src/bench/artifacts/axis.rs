//! An x axis with ticks exactly at given values, linear or log₂: bar positions of the summary panels and the
//! measured lengths of the scaling figures (plotters' own log axis puts ticks at powers only).

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};

/// An axis over `range` (in data units) with bold ticks at `ticks` and no light ticks.
#[derive(Debug, Clone)]
pub(crate) struct TickAxis {
    /// Ends of the axis in data units.
    range: Range<f64>,
    /// Tick positions in data units, ascending.
    ticks: Vec<f64>,
    /// Whether positions map through log₂ (all values must then be positive).
    log2: bool,
}

impl TickAxis {
    /// A linear axis over `range` with ticks at `ticks`.
    pub(crate) fn linear(range: Range<f64>, ticks: Vec<f64>) -> Self {
        TickAxis {
            range,
            ticks,
            log2: false,
        }
    }

    /// A log₂ axis whose ticks are the distinct positive `values`, padded by 6 % of the span plus 0.2 octave
    /// on each side (half an octave around a single value).
    pub(crate) fn log2(values: impl Iterator<Item = f64>) -> Self {
        let mut ticks: Vec<f64> = values.filter(|v| *v > 0.0 && v.is_finite()).collect();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        let (lo, hi) = match (ticks.first(), ticks.last()) {
            (Some(a), Some(b)) => (a.log2(), b.log2()),
            _ => (0.0, 1.0),
        };
        let pad = if hi > lo { 0.06 * (hi - lo) + 0.2 } else { 0.5 };
        TickAxis {
            range: (lo - pad).exp2()..(hi + pad).exp2(),
            ticks,
            log2: true,
        }
    }

    fn position(&self, v: f64) -> f64 {
        if self.log2 { v.log2() } else { v }
    }
}

impl Ranged for TickAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (self.position(self.range.start), self.position(self.range.end));
        let t = (self.position(*value) - a) / (b - a);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        // Every tick when they fit, else every k-th so that at most `max` remain.
        let max = hint.max_num_points().max(1);
        let step = self.ticks.len().div_ceil(max).max(1);
        self.ticks.iter().copied().step_by(step).collect()
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

impl ValueFormatter<f64> for TickAxis {
    fn format(value: &f64) -> String {
        format!("{value}")
    }
}
