//! The two scaling figures: `latency_vs_context` (decode tokens/s against prompt length) and
//! `memory_scaling` (KV-cache MiB against sequence length), one line per model × cache kind.

use super::line_figure::{LineFigure, Point, Series};
use crate::bench::Report;

/// Appends `point` to the series of `(model, cache_kind)`, creating it in order of appearance;
/// a repeated x in one series keeps its first point.
fn push(series: &mut Vec<(String, String, Series)>, model: &str, cache_kind: &str, point: Point) {
    let index = match series.iter().position(|(m, c, _)| m == model && c == cache_kind) {
        Some(i) => i,
        None => {
            let label = format!("{model} / {cache_kind}");
            series.push((
                model.to_owned(),
                cache_kind.to_owned(),
                Series {
                    label,
                    points: Vec::new(),
                },
            ));
            series.len() - 1
        }
    };
    let points = &mut series[index].2.points;
    if !points.iter().any(|p| p.x == point.x) {
        points.push(point);
    }
}

/// Decode tokens/s (median, with min–max whiskers) against prompt length, at the smallest batch size and
/// the median generation length measured at that batch (the lower middle one for an even count).
pub(crate) fn latency_vs_context(report: &Report) -> LineFigure {
    let batch = report.latency.iter().map(|r| r.batch_size).min();
    let mut gens: Vec<usize> = report
        .latency
        .iter()
        .filter(|r| Some(r.batch_size) == batch)
        .map(|r| r.gen_len)
        .collect();
    gens.sort_unstable();
    gens.dedup();
    let gen_len = gens.get(gens.len().saturating_sub(1) / 2).copied();
    let mut series = Vec::new();
    for r in report
        .latency
        .iter()
        .filter(|r| Some(r.batch_size) == batch && Some(r.gen_len) == gen_len)
    {
        let s = r.decode_tokens_per_sec;
        let point = Point {
            x: r.prompt_len as f64,
            y: s.median,
            range: Some((s.min, s.max)),
        };
        push(&mut series, &r.model, &r.cache_kind, point);
    }
    let title = match (batch, gen_len) {
        (Some(b), Some(g)) => format!("Decode throughput vs prompt length (batch {b}, {g} new tokens)"),
        _ => "Decode throughput vs prompt length".to_owned(),
    };
    LineFigure {
        title,
        x_desc: "prompt length (tokens, log2 scale)".into(),
        y_desc: "decode throughput (tokens/s; median, bars: min-max)".into(),
        legend_title: "model / cache".into(),
        series: series.into_iter().map(|(_, _, s)| s).collect(),
        empty_message: "no latency results".into(),
    }
}

/// KV-cache size in MiB (exact bytes, scales included) against sequence length, at the smallest batch size.
pub(crate) fn memory_scaling(report: &Report) -> LineFigure {
    let batch = report.memory.iter().map(|r| r.batch_size).min();
    let mut series = Vec::new();
    for r in report.memory.iter().filter(|r| Some(r.batch_size) == batch) {
        let point = Point {
            x: r.seq_len as f64,
            y: r.kv_bytes as f64 / (1u64 << 20) as f64,
            range: None,
        };
        push(&mut series, &r.model, &r.cache_kind, point);
    }
    let title = match batch {
        Some(b) => format!("KV cache size vs sequence length (batch {b})"),
        None => "KV cache size vs sequence length".to_owned(),
    };
    LineFigure {
        title,
        x_desc: "sequence length (tokens, log2 scale)".into(),
        y_desc: "KV cache (MiB, data + scales)".into(),
        legend_title: "model / cache".into(),
        series: series.into_iter().map(|(_, _, s)| s).collect(),
        empty_message: "no memory results".into(),
    }
}
