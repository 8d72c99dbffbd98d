//! A line chart on a log₂ x axis with one line per series, min–max whiskers, and a legend on the right;
//! the shape of `latency_vs_context` and `memory_scaling`.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::TickAxis;
use super::chart_kit::{self, AXIS_PX, CAPTION_PX, LABEL_PX};
use super::figure::{DrawResult, Plot};
use super::font::FAMILY;
use super::format;

/// One point: x (positive, plotted on log₂), y, and an optional `(min, max)` range drawn as a whisker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Point {
    pub x: f64,
    pub y: f64,
    pub range: Option<(f64, f64)>,
}

/// One line of the chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub label: String,
    pub points: Vec<Point>,
}

/// A complete line chart.
#[derive(Debug, Clone)]
pub(crate) struct LineFigure {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub legend_title: String,
    pub series: Vec<Series>,
    /// Shown instead of the chart when no series has a point.
    pub empty_message: String,
}

impl Plot for LineFigure {
    fn size(&self) -> (u32, u32) {
        (1100, 650)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let points = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|p| p.x > 0.0)
        };
        if points().next().is_none() {
            return chart_kit::draw_empty(root, &self.title, &self.empty_message);
        }
        let x_axis = TickAxis::log2(points().map(|p| p.x));
        let y_top = points()
            .map(|p| p.range.map_or(p.y, |(_, max)| max.max(p.y)))
            .fold(0.0, f64::max);
        let y_top = if y_top > 0.0 { y_top * 1.12 } else { 1.0 };

        let mut labels: Vec<String> = self.series.iter().map(|s| s.label.clone()).collect();
        labels.push(self.legend_title.clone());
        let (w, _) = root.dim_in_pixel();
        let legend_w = chart_kit::legend_width(root, &labels, w * 2 / 5);
        let (chart_area, legend_area) = root.split_horizontally(w - legend_w);

        let mut chart = ChartBuilder::on(&chart_area)
            .caption(&self.title, (FAMILY, CAPTION_PX))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(90)
            .build_cartesian_2d(x_axis, 0f64..y_top)?;
        let y_format = chart_kit::tick_format(y_top);
        chart
            .configure_mesh()
            .x_desc(&self.x_desc)
            .y_desc(&self.y_desc)
            .x_label_formatter(&|v| format::grouped(*v, 0))
            .y_label_formatter(&y_format)
            .y_labels(8)
            .y_max_light_lines(1)
            .label_style((FAMILY, LABEL_PX))
            .axis_desc_style((FAMILY, AXIS_PX))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()?;

        let mut entries = Vec::new();
        for (i, series) in self.series.iter().enumerate() {
            let color = chart_kit::color(i);
            let mut pts: Vec<Point> = series.points.iter().copied().filter(|p| p.x > 0.0).collect();
            pts.sort_by(|a, b| a.x.total_cmp(&b.x));
            chart.draw_series(LineSeries::new(
                pts.iter().map(|p| (p.x, p.y)),
                color.stroke_width(2),
            ))?;
            chart.draw_series(pts.iter().map(|p| Circle::new((p.x, p.y), 4, color.filled())))?;
            chart.draw_series(pts.iter().filter_map(|p| {
                let (min, max) = p.range?;
                Some(PathElement::new(
                    vec![(p.x, min), (p.x, max)],
                    color.stroke_width(1),
                ))
            }))?;
            entries.push((series.label.clone(), color));
        }
        chart_kit::draw_legend(&legend_area, &self.legend_title, &entries, 70)
    }
}
