//! The pictures of a classifier run: the test confusion matrix, a sheet of misclassified test
//! images (true → predicted), and the training curves (train/val loss and val accuracy by step).
//! PNG with the system font, SVG when there is none ([`super::font`]); each file written atomically.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::chart_kit::{self, AXIS_PX, CAPTION_PX, LABEL_PX, TITLE_PX};
use super::figure::{DrawResult, FigureFormat, Plot, render};
use super::font::{FAMILY, figure_font};

/// Test-split confusion counts `confusion[label][predicted]`.
pub struct ConfusionFigure {
    pub title: String,
    pub confusion: Vec<Vec<usize>>,
}

/// Misclassified images: `(pixels (h·w, 0..1), true, predicted)`.
pub struct MisclassifiedFigure {
    pub title: String,
    pub height: usize,
    pub width: usize,
    pub examples: Vec<(Vec<f32>, u32, u32)>,
    /// Misclassified rows in all (the sheet shows at most [`MAX_EXAMPLES`]).
    pub total: usize,
}

/// Loss and accuracy by step.
pub struct CurvesFigure {
    pub title: String,
    pub train_loss: Vec<(f64, f64)>,
    pub val_loss: Vec<(f64, f64)>,
    pub val_accuracy: Vec<(f64, f64)>,
    /// Final test accuracy, drawn as a dashed line on the accuracy panel.
    pub test_accuracy: Option<f64>,
}

/// Most images on the misclassified sheet.
pub const MAX_EXAMPLES: usize = 32;

/// Render `plot` as PNG (or SVG without a font) to `<dir>/<stem>.<ext>`, atomically.
pub(crate) fn write_figure<P: Plot>(plot: &P, dir: &Path, stem: &str) -> Result<PathBuf, String> {
    let format = if figure_font().is_ok() {
        FigureFormat::Png
    } else {
        FigureFormat::Svg
    };
    let bytes = render(plot, format)?;
    let path = dir.join(format!("{stem}.{}", format.extension()));
    crate::record::write_atomic(&path, &bytes).map_err(|e| e.to_string())?;
    Ok(path)
}

/// White → blue by `v` in [0, 1].
fn blue(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 69.0), mix(255.0, 148.0))
}

impl Plot for ConfusionFigure {
    fn size(&self) -> (u32, u32) {
        let k = self.confusion.len().max(1) as u32;
        (260 + 56 * k + 150, 170 + 56 * k)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let k = self.confusion.len();
        let cell = 56i32;
        let (x0, y0) = (150i32, 110i32);
        root.draw(&Text::new(
            self.title.clone(),
            (20, 16),
            chart_kit::text(TITLE_PX, HPos::Left, VPos::Top),
        ))?;
        root.draw(&Text::new(
            "predicted class →",
            (x0 + cell * k as i32 / 2, y0 - 40),
            chart_kit::text(AXIS_PX, HPos::Center, VPos::Center),
        ))?;
        root.draw(&Text::new(
            "true class ↓",
            (20, y0 - 40),
            chart_kit::text(AXIS_PX, HPos::Left, VPos::Center),
        ))?;
        root.draw(&Text::new(
            "recall",
            (x0 + cell * k as i32 + 60, y0 - 16),
            chart_kit::text(AXIS_PX, HPos::Center, VPos::Center),
        ))?;
        for (i, row) in self.confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            let y = y0 + cell * i as i32;
            root.draw(&Text::new(
                i.to_string(),
                (x0 - 16, y + cell / 2),
                chart_kit::text(LABEL_PX + 2.0, HPos::Right, VPos::Center),
            ))?;
            for (j, &n) in row.iter().enumerate() {
                let x = x0 + cell * j as i32;
                if i == 0 {
                    root.draw(&Text::new(
                        j.to_string(),
                        (x + cell / 2, y0 - 14),
                        chart_kit::text(LABEL_PX + 2.0, HPos::Center, VPos::Center),
                    ))?;
                }
                let frac = if total == 0 { 0.0 } else { n as f64 / total as f64 };
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    blue(frac).filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    RGBColor(200, 200, 200),
                ))?;
                if n > 0 {
                    let color = if frac > 0.5 {
                        WHITE
                    } else if i == j {
                        BLACK
                    } else {
                        RGBColor(190, 30, 30)
                    };
                    root.draw(&Text::new(
                        n.to_string(),
                        (x + cell / 2, y + cell / 2),
                        TextStyle::from((FAMILY, LABEL_PX + 2.0).into_font())
                            .color(&color)
                            .pos(plotters::style::text_anchor::Pos::new(HPos::Center, VPos::Center)),
                    ))?;
                }
            }
            let recall = if total == 0 {
                0.0
            } else {
                row.get(i).copied().unwrap_or(0) as f64 / total as f64
            };
            root.draw(&Text::new(
                format!("{:.1}%", 100.0 * recall),
                (x0 + cell * k as i32 + 60, y + cell / 2),
                chart_kit::text(LABEL_PX + 2.0, HPos::Center, VPos::Center),
            ))?;
        }
        root.draw(&Text::new(
            "cells: test rows by (true, predicted); shade: share of the true class's rows",
            (20, y0 + cell * k as i32 + 24),
            chart_kit::text(LABEL_PX, HPos::Left, VPos::Top),
        ))?;
        Ok(())
    }
}

impl Plot for MisclassifiedFigure {
    fn size(&self) -> (u32, u32) {
        let n = self.examples.len().max(1) as u32;
        let cols = n.min(8);
        let rows = n.div_ceil(8);
        (40 + cols * 130, 90 + rows * 160)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.draw(&Text::new(
            self.title.clone(),
            (20, 16),
            chart_kit::text(CAPTION_PX, HPos::Left, VPos::Top),
        ))?;
        if self.examples.is_empty() {
            root.draw(&Text::new(
                "no misclassified test rows",
                (20, 60),
                chart_kit::text(AXIS_PX, HPos::Left, VPos::Top),
            ))?;
            return Ok(());
        }
        let side = 104i32;
        let px = side / self.height.max(self.width).max(1) as i32;
        for (n, (pixels, truth, pred)) in self.examples.iter().enumerate() {
            let (col, row) = ((n % 8) as i32, (n / 8) as i32);
            let (x0, y0) = (30 + col * 130, 64 + row * 160);
            // why: the digits' ink is dark on white, as they were written (pixel 1 = full ink).
            for r in 0..self.height {
                for c in 0..self.width {
                    let v = pixels
                        .get(r * self.width + c)
                        .copied()
                        .unwrap_or(0.0)
                        .clamp(0.0, 1.0);
                    let g = (255.0 * (1.0 - v as f64)).round() as u8;
                    let (x, y) = (x0 + c as i32 * px, y0 + r as i32 * px);
                    root.draw(&Rectangle::new(
                        [(x, y), (x + px, y + px)],
                        RGBColor(g, g, g).filled(),
                    ))?;
                }
            }
            root.draw(&Rectangle::new(
                [
                    (x0, y0),
                    (x0 + px * self.width as i32, y0 + px * self.height as i32),
                ],
                RGBColor(160, 160, 160),
            ))?;
            root.draw(&Text::new(
                format!("true {truth} → {pred}"),
                (x0 + side / 2, y0 + side + 22),
                chart_kit::text(LABEL_PX, HPos::Center, VPos::Center),
            ))?;
        }
        Ok(())
    }
}

impl Plot for CurvesFigure {
    fn size(&self) -> (u32, u32) {
        (1200, 520)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let (title, body) = root.split_vertically(50);
        title.draw(&Text::new(
            self.title.clone(),
            (20, 12),
            chart_kit::text(TITLE_PX, HPos::Left, VPos::Top),
        ))?;
        let (left, right) = body.split_horizontally(600);
        let x_max = self
            .train_loss
            .iter()
            .chain(&self.val_loss)
            .map(|p| p.0)
            .fold(1.0, f64::max);
        let y_max = self
            .train_loss
            .iter()
            .chain(&self.val_loss)
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.05;
        let mut chart = ChartBuilder::on(&left)
            .caption("cross-entropy loss (nats)", (FAMILY, CAPTION_PX))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .label_style((FAMILY, LABEL_PX))
            .axis_desc_style((FAMILY, AXIS_PX))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&chart_kit::tick_format(y_max))
            .draw()?;
        let train = chart_kit::color(0);
        let val = chart_kit::color(1);
        chart
            .draw_series(LineSeries::new(
                self.train_loss.iter().copied(),
                train.stroke_width(2),
            ))?
            .label("train (batch)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], train.stroke_width(3)));
        chart
            .draw_series(LineSeries::new(
                self.val_loss.iter().copied(),
                val.stroke_width(3),
            ))?
            .label("validation split")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], val.stroke_width(3)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FAMILY, LABEL_PX))
            .draw()?;

        let acc_min = self
            .val_accuracy
            .iter()
            .map(|p| p.1)
            .chain(self.test_accuracy)
            .fold(1.0, f64::min);
        let lo = ((acc_min * 10.0).floor() / 10.0).clamp(0.0, 0.9);
        let mut chart = ChartBuilder::on(&right)
            .caption("accuracy", (FAMILY, CAPTION_PX))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, lo..1.0)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .label_style((FAMILY, LABEL_PX))
            .axis_desc_style((FAMILY, AXIS_PX))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                self.val_accuracy.iter().copied(),
                val.stroke_width(3),
            ))?
            .label("validation split")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], val.stroke_width(3)));
        if let Some(test) = self.test_accuracy {
            let test_color = chart_kit::color(2);
            let dashes: Vec<_> = (0..40)
                .filter(|i| i % 2 == 0)
                .map(|i| {
                    let a = x_max * i as f64 / 40.0;
                    let b = x_max * (i + 1) as f64 / 40.0;
                    PathElement::new(vec![(a, test), (b, test)], test_color.stroke_width(2))
                })
                .collect();
            chart
                .draw_series(dashes)?
                .label(format!("test, final weights: {:.2}%", test * 100.0))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], test_color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FAMILY, LABEL_PX))
            .draw()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_figures_render() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = ConfusionFigure {
            title: "t".into(),
            confusion: vec![vec![5, 1], vec![0, 4]],
        };
        let m = MisclassifiedFigure {
            title: "m".into(),
            height: 2,
            width: 2,
            examples: vec![(vec![0.0, 1.0, 0.5, 0.2], 0, 1)],
            total: 1,
        };
        let k = CurvesFigure {
            title: "k".into(),
            train_loss: vec![(1.0, 2.0), (2.0, 1.0)],
            val_loss: vec![(2.0, 1.2)],
            val_accuracy: vec![(2.0, 0.8)],
            test_accuracy: Some(0.85),
        };
        for p in [
            write_figure(&c, dir.path(), "c"),
            write_figure(&m, dir.path(), "m"),
            write_figure(&k, dir.path(), "k"),
        ] {
            let p = p.expect("rendered");
            assert!(std::fs::metadata(&p).expect("written").len() > 100);
        }
    }
}
