//! Sparklines: a series as one line of block characters `▁▂▃▄▅▆▇█`, each value a bar whose height
//! is its place between the shown values' minimum (`▁`) and maximum (`█`).

/// The eight bar heights, lowest first.
pub const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last `width` values of `values` as a sparkline, scaled between their own minimum and
/// maximum (all `▁` when those are equal). A non-finite value is a space; no finite value at all
/// gives spaces only.
pub fn sparkline(values: &[f64], width: usize) -> String {
    let shown = &values[values.len().saturating_sub(width)..];
    let Some((min, max)) = finite_range(shown) else {
        return " ".repeat(shown.len());
    };
    let span = max - min;
    shown
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                ' '
            } else if span > 0.0 {
                let level = ((v - min) / span * (BARS.len() - 1) as f64).round() as usize;
                BARS[level.min(BARS.len() - 1)]
            } else {
                BARS[0]
            }
        })
        .collect()
}

/// The minimum and maximum of the finite values, if there is one.
pub fn finite_range(values: &[f64]) -> Option<(f64, f64)> {
    values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_between_min_and_max() {
        // (v - 1) / 3 · 7 = 7, 4.67, 2.33, 0, 0 → rounded 7, 5, 2, 0, 0.
        assert_eq!(sparkline(&[4.0, 3.0, 2.0, 1.0, 1.0], 10), "█▆▃▁▁");
        assert_eq!(
            sparkline(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 8),
            "▁▂▃▄▅▆▇█"
        );
    }

    #[test]
    fn only_the_last_width_values_are_shown_and_scaled() {
        assert_eq!(sparkline(&[100.0, 2.0, 1.0, 1.0], 3), "█▁▁");
        assert_eq!(sparkline(&[1.0, 2.0], 0), "");
    }

    #[test]
    fn flat_non_finite_and_empty_series() {
        assert_eq!(sparkline(&[2.0, 2.0], 5), "▁▁");
        assert_eq!(sparkline(&[1.0, f64::NAN, 3.0], 5), "▁ █");
        assert_eq!(sparkline(&[f64::INFINITY, f64::NAN], 5), "  ");
        assert_eq!(sparkline(&[], 5), "");
        assert_eq!(finite_range(&[3.0, f64::NAN, -1.0]), Some((-1.0, 3.0)));
    }
}
