//! The live loss plot: a sparkline of the recent `train/loss` values with their range, drawn under
//! the progress bar of an interactive run.
//!
//! ```text
//! train [=============>        ] 420/1000 loss 2.3100 · 51234 tok/s (00:41 < 00:57)
//! loss █▇▆▅▅▄▄▃▃▂▂▂▁▁▁ min 2.3100 max 5.4700 last 2.3100
//! ```
//! [`super::open`] opens it only when the caller says the run is interactive (stderr is a
//! terminal); elsewhere the line would be invisible anyway (see [`crate::console`]).

use std::collections::VecDeque;

use super::tags::TRAIN_LOSS;
use super::{Instrument, InstrumentError};
use crate::console::LiveLine;
use crate::console::sparkline::{finite_range, sparkline};

/// Logged loss values shown (one character each).
pub const WIDTH: usize = 60;

/// The plot's text for `values` (oldest first): the last `width` of them as a sparkline, then the
/// minimum and maximum of those shown and the last value.
pub fn loss_plot(values: &[f64], width: usize) -> String {
    let shown = &values[values.len().saturating_sub(width)..];
    let (Some((min, max)), Some(last)) = (finite_range(shown), shown.last()) else {
        return "loss (no value yet)".into();
    };
    format!(
        "loss {} min {min:.4} max {max:.4} last {last:.4}",
        sparkline(shown, width)
    )
}

/// The live plot instrument: keeps the last [`WIDTH`] losses and redraws its line on each.
pub struct LivePlot {
    values: VecDeque<f64>,
    line: LiveLine,
}

impl LivePlot {
    pub fn new() -> Self {
        let line = LiveLine::new("loss");
        line.set(&loss_plot(&[], WIDTH));
        Self {
            values: VecDeque::with_capacity(WIDTH + 1),
            line,
        }
    }
}

impl Default for LivePlot {
    fn default() -> Self {
        Self::new()
    }
}

impl Instrument for LivePlot {
    fn scalars(&mut self, _step: usize, scalars: &[(&str, f64)]) -> Result<(), InstrumentError> {
        let Some((_, loss)) = scalars.iter().find(|(tag, _)| *tag == TRAIN_LOSS) else {
            return Ok(());
        };
        if self.values.len() == WIDTH {
            self.values.pop_front();
        }
        self.values.push_back(*loss);
        self.line.set(&loss_plot(self.values.make_contiguous(), WIDTH));
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
    fn plot_text() {
        assert_eq!(
            loss_plot(&[4.0, 3.0, 2.0, 1.0, 1.0], 60),
            "loss █▆▃▁▁ min 1.0000 max 4.0000 last 1.0000"
        );
        // Only the last 3 are shown, and the labels describe those; 2.0 is 3.5/7 up, rounded to 4.
        assert_eq!(
            loss_plot(&[9.0, 2.5, 2.0, 1.5], 3),
            "loss █▅▁ min 1.5000 max 2.5000 last 1.5000"
        );
        assert_eq!(loss_plot(&[], 60), "loss (no value yet)");
        assert_eq!(loss_plot(&[f64::NAN], 60), "loss (no value yet)");
        assert_eq!(
            loss_plot(&[2.0, f64::NAN], 60),
            "loss ▁  min 2.0000 max 2.0000 last NaN"
        );
    }

    #[test]
    fn keeps_the_last_width_losses_and_ignores_other_tags() {
        let mut plot = LivePlot::new();
        for step in 0..(WIDTH + 5) {
            plot.scalars(step, &[("train/lr", 1.0), (TRAIN_LOSS, step as f64)])
                .expect("scalars");
        }
        plot.scalars(0, &[("eval/val_loss", -1.0)]).expect("no loss");
        assert_eq!(plot.values.len(), WIDTH);
        assert_eq!(plot.values.front(), Some(&5.0));
        assert_eq!(plot.values.back(), Some(&((WIDTH + 4) as f64)));
    }
}
