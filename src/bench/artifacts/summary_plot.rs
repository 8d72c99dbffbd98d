//! `summary` figure: three bar panels comparing baseline and candidate — perplexity, decode tokens/s (the
//! speedup in the caption) and KV-cache bytes/token (the reduction in the caption).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::axis::TickAxis;
use super::chart_kit::{self, AXIS_PX, CAPTION_PX, LABEL_PX, TITLE_PX};
use super::figure::{DrawResult, Plot};
use super::font::FAMILY;
use super::format;
use crate::bench::{Report, Summary};

/// One bar panel: caption, y-axis description, the basis of the comparison, and the two bars.
struct Panel {
    caption: String,
    y_desc: &'static str,
    basis: String,
    bars: Option<(f64, f64)>,
    value: fn(f64) -> String,
}

/// The three-panel summary figure of a report.
pub(crate) struct SummaryPlot {
    title: String,
    names: (String, String),
    panels: [Panel; 3],
}

impl SummaryPlot {
    /// Builds the panels from `report`'s summary.
    pub(crate) fn new(report: &Report) -> SummaryPlot {
        let s: Summary = report.summary();
        let baseline = s.baseline.clone().unwrap_or_else(|| "baseline".into());
        let candidate = s.candidate.clone().unwrap_or_else(|| "candidate".into());
        let title = format!("{}: {} vs {}", report.metadata.name, baseline, candidate);
        let ppl = Panel {
            caption: match &s.perplexity {
                Some(p) => format!("Perplexity: {}x (lower is better)", format::ratio(p.ratio)),
                None => "Perplexity (lower is better)".into(),
            },
            y_desc: "perplexity",
            basis: s.perplexity.as_ref().map_or_else(String::new, |p| {
                format!("block {}, cache {}", p.block_size, p.cache_kind)
            }),
            bars: s.perplexity.as_ref().map(|p| (p.baseline, p.candidate)),
            value: format::perplexity,
        };
        let tps = Panel {
            caption: match &s.throughput {
                Some(t) => format!("Decode throughput: {}x speedup", format::ratio(t.speedup)),
                None => "Decode throughput".into(),
            },
            y_desc: "tokens / s (median)",
            basis: s.throughput.as_ref().map_or_else(String::new, |t| {
                format!(
                    "batch {}, cache {}, {} config(s)",
                    t.batch_size, t.cache_kind, t.configs
                )
            }),
            bars: s
                .throughput
                .as_ref()
                .map(|t| (t.baseline_tokens_per_sec, t.candidate_tokens_per_sec)),
            value: format::throughput,
        };
        let kv = Panel {
            caption: match &s.kv_cache {
                Some(k) => format!("KV cache: {}x reduction", format::ratio(k.reduction)),
                None => "KV cache".into(),
            },
            y_desc: "bytes / token",
            basis: s
                .kv_cache
                .as_ref()
                .map_or_else(String::new, |k| format!("cache {}", k.cache_kind)),
            bars: s
                .kv_cache
                .as_ref()
                .map(|k| (k.baseline_bytes_per_token, k.candidate_bytes_per_token)),
            value: format::bytes,
        };
        SummaryPlot {
            title,
            names: (baseline, candidate),
            panels: [ppl, tps, kv],
        }
    }

    fn draw_panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, panel: &Panel) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let Some((b, c)) = panel.bars else {
            return chart_kit::draw_empty(area, &panel.caption, "no matched results");
        };
        let top = b.max(c) * 1.18;
        let names = [
            chart_kit::shorten(&self.names.0, 18),
            chart_kit::shorten(&self.names.1, 18),
        ];
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.caption, (FAMILY, CAPTION_PX))
            .margin(14)
            .x_label_area_size(64)
            .y_label_area_size(84)
            .build_cartesian_2d(TickAxis::linear(-0.6..1.6, vec![0.0, 1.0]), 0f64..top)?;
        let y_format = chart_kit::tick_format(top);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(&panel.basis)
            .y_desc(panel.y_desc)
            .x_label_formatter(&|x| names.get(x.round() as usize).cloned().unwrap_or_default())
            .y_label_formatter(&y_format)
            .y_labels(8)
            .y_max_light_lines(1)
            .label_style((FAMILY, LABEL_PX))
            .axis_desc_style((FAMILY, AXIS_PX))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()?;
        for (i, v) in [b, c].into_iter().enumerate() {
            let x = i as f64;
            let color = chart_kit::color(i);
            chart.draw_series([Rectangle::new([(x - 0.32, 0.0), (x + 0.32, v)], color.filled())])?;
            let label = chart_kit::text(LABEL_PX, HPos::Center, VPos::Bottom);
            chart.draw_series([Text::new((panel.value)(v), (x, v + top * 0.01), label)])?;
        }
        Ok(())
    }
}

impl Plot for SummaryPlot {
    fn size(&self) -> (u32, u32) {
        (1500, 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let body = root.margin(8, 0, 0, 0).titled(&self.title, (FAMILY, TITLE_PX))?;
        let areas = body.split_evenly((1, 3));
        for (area, panel) in areas.iter().zip(&self.panels) {
            self.draw_panel(area, panel)?;
        }
        Ok(())
    }
}
