//! `report.html`: one self-contained page — metadata, the summary table, every result table, the verify
//! output, and the figures embedded as base64 `data:` URIs — that opens anywhere without its neighbours.

use std::fmt::Write;

use base64::Engine;

use super::figure::FigureFormat;
use super::format;
use super::report_json::ArtifactInfo;
use crate::bench::Report;

/// A rendered figure to embed: file stem, caption, bytes.
pub(crate) struct Embedded<'a> {
    pub stem: &'a str,
    pub caption: &'a str,
    pub bytes: &'a [u8],
}

/// Escapes `& < > " '` for HTML text and attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1180px;margin:2em auto;\
padding:0 1em;color:#222}h1{margin-bottom:.2em}table{border-collapse:collapse;margin:1em 0;font-size:.92em}\
th,td{padding:.3em .8em;text-align:right;border-bottom:1px solid #ddd}th{border-bottom:2px solid #444}\
td:first-child,th:first-child{text-align:left}figure{margin:1.5em 0}img{max-width:100%;border:1px solid #eee}\
figcaption{color:#555;font-size:.9em}pre{background:#f6f6f6;padding:1em;overflow:auto}.note{color:#555}";

/// Writes a `<table id=…>` with `header` and `rows` (cells already escaped).
fn table(out: &mut String, id: &str, header: &[&str], rows: &[Vec<String>]) {
    let _ = write!(out, "<table id=\"{id}\"><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape_html(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn figure(out: &mut String, fig: &Embedded<'_>, format: FigureFormat) {
    let data = base64::engine::general_purpose::STANDARD.encode(fig.bytes);
    let _ = writeln!(
        out,
        "<figure id=\"fig-{stem}\"><img alt=\"{caption}\" src=\"data:{mime};base64,{data}\">\
         <figcaption>{caption} ({stem}.{ext})</figcaption></figure>",
        stem = escape_html(fig.stem),
        caption = escape_html(fig.caption),
        mime = format.mime(),
        ext = format.extension(),
    );
}

/// The page for `report`, embedding `figures` (in the order given) in `info.figure_format`.
pub(crate) fn report_html(report: &Report, info: &ArtifactInfo, figures: &[Embedded<'_>]) -> String {
    let e = |s: &str| escape_html(s);
    let m = &report.metadata;
    let s = report.summary();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{} - caramba report</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>",
        e(&m.name),
        e(&m.name)
    );
    let mut meta = vec![
        vec!["manifest".to_owned(), e(&m.manifest)],
        vec!["target".to_owned(), e(&m.target)],
        vec![
            "git revision".to_owned(),
            e(m.git_revision.as_deref().unwrap_or("unknown")),
        ],
        vec!["device".to_owned(), e(&m.device)],
        vec!["dtype".to_owned(), e(&m.dtype)],
        vec!["build flags".to_owned(), e(&m.build_flags.join(" "))],
        vec!["created at".to_owned(), e(&m.created_at)],
    ];
    meta.extend(
        m.versions
            .iter()
            .map(|(k, v)| vec![format!("version of {}", e(k)), e(v)]),
    );
    table(&mut out, "metadata", &["field", "value"], &meta);

    out.push_str("<h2>Summary</h2>\n");
    let baseline = s.baseline.clone().unwrap_or_else(|| "baseline".into());
    let candidate = s.candidate.clone().unwrap_or_else(|| "candidate".into());
    let dash = || ["-".to_owned(), "-".to_owned(), "-".to_owned()];
    let [pb, pc, pr] = s.perplexity.as_ref().map_or_else(dash, |p| {
        [
            format::perplexity(p.baseline),
            format::perplexity(p.candidate),
            format!("{}&times;", format::ratio(p.ratio)),
        ]
    });
    let [tb, tc, tr] = s.throughput.as_ref().map_or_else(dash, |t| {
        [
            format::throughput(t.baseline_tokens_per_sec),
            format::throughput(t.candidate_tokens_per_sec),
            format!("{}&times; speedup", format::ratio(t.speedup)),
        ]
    });
    let [kb, kc, kr] = s.kv_cache.as_ref().map_or_else(dash, |k| {
        [
            format::bytes(k.baseline_bytes_per_token),
            format::bytes(k.candidate_bytes_per_token),
            format!("{}&times; reduction", format::ratio(k.reduction)),
        ]
    });
    let by_set = s.perplexity_sets.len() > 1;
    let mut rows = if by_set {
        (s.perplexity_sets.iter())
            .map(|p| {
                vec![
                    format!("Perplexity, {} &darr;", e(&p.set)),
                    format::perplexity(p.baseline),
                    format::perplexity(p.candidate),
                    format!("{}&times;", format::ratio(p.ratio)),
                ]
            })
            .collect()
    } else {
        vec![vec!["Perplexity &darr;".to_owned(), pb, pc, pr]]
    };
    rows.extend([
        vec!["Throughput (tok/s) &uarr;".to_owned(), tb, tc, tr],
        vec!["KV cache (bytes/token) &darr;".to_owned(), kb, kc, kr],
    ]);
    table(
        &mut out,
        "summary",
        &["metric", &baseline, &candidate, "change"],
        &rows,
    );
    let mut notes = Vec::new();
    if let Some(p) = s.perplexity_sets.first().filter(|_| by_set) {
        notes.push(format!(
            "perplexity on each held-out text set at block size {} with cache {}",
            p.block_size,
            e(&p.cache_kind)
        ));
    } else if let Some(p) = &s.perplexity {
        notes.push(format!(
            "perplexity at block size {} with cache {}",
            p.block_size,
            e(&p.cache_kind)
        ));
    }
    if let Some(t) = &s.throughput {
        notes.push(format!(
            "throughput: median decode tokens/s over {} matched configuration(s) at batch size {} with cache {}",
            t.configs,
            t.batch_size,
            e(&t.cache_kind)
        ));
    }
    if let Some(k) = &s.kv_cache {
        notes.push(format!(
            "KV cache bytes per token (data and scales) with cache {}",
            e(&k.cache_kind)
        ));
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "<p class=\"note\">{}.</p>", notes.join("; "));
    }
    let by_stem = |stem: &str| figures.iter().find(|f| f.stem == stem);
    if let Some(f) = by_stem("summary") {
        figure(&mut out, f, info.figure_format);
    }

    out.push_str("<h2>Perplexity</h2>\n");
    let rows: Vec<Vec<String>> = (report.perplexity.iter())
        .map(|r| {
            let cells = [r.block_size.to_string(), r.tokens.to_string()];
            let mut row = vec![e(&r.model), e(&r.set), e(&r.cache_kind)];
            row.extend(cells);
            row.extend([format!("{:.4}", r.nll), format::perplexity(r.perplexity)]);
            row
        })
        .collect();
    table(
        &mut out,
        "perplexity",
        &[
            "model",
            "set",
            "cache",
            "block size",
            "tokens",
            "NLL (nats)",
            "perplexity",
        ],
        &rows,
    );

    out.push_str("<h2>Latency</h2>\n");
    let stat =
        |s: crate::bench::Stat, f: fn(f64) -> String| format!("{} [{}, {}]", f(s.median), f(s.min), f(s.max));
    let ms = |x: f64| format::grouped(x, 2);
    let rows: Vec<Vec<String>> = (report.latency.iter())
        .map(|r| {
            vec![
                e(&r.model),
                e(&r.cache_kind),
                r.prompt_len.to_string(),
                r.gen_len.to_string(),
                r.batch_size.to_string(),
                r.runs.to_string(),
                stat(r.prefill_ms, ms),
                stat(r.ttft_ms, ms),
                stat(r.decode_tokens_per_sec, format::throughput),
            ]
        })
        .collect();
    let header = [
        "model",
        "cache",
        "prompt",
        "generated",
        "batch",
        "runs",
        "prefill ms",
        "TTFT ms",
        "decode tok/s",
    ];
    table(&mut out, "latency", &header, &rows);
    out.push_str("<p class=\"note\">Timings: median [min, max] over the timed runs.</p>\n");
    if let Some(f) = by_stem("latency_vs_context") {
        figure(&mut out, f, info.figure_format);
    }

    out.push_str("<h2>Memory</h2>\n");
    let mib = |b: u64| format::grouped(b as f64 / (1u64 << 20) as f64, 2);
    let rows: Vec<Vec<String>> = (report.memory.iter())
        .map(|r| {
            let peak = match (r.peak_bytes, &r.peak_unavailable) {
                (Some(b), _) => mib(b),
                (None, Some(why)) => format!("n/a ({})", e(why)),
                (None, None) => "n/a".to_owned(),
            };
            vec![
                e(&r.model),
                e(&r.cache_kind),
                r.seq_len.to_string(),
                r.batch_size.to_string(),
                format::grouped(r.kv_bytes as f64, 0),
                r.kv_bytes_per_token()
                    .map_or_else(|| "-".to_owned(), format::bytes),
                peak,
                mib(r.model_bytes),
            ]
        })
        .collect();
    let header = [
        "model",
        "cache",
        "sequence",
        "batch",
        "KV bytes",
        "KV bytes/token",
        "peak MiB",
        "model MiB",
    ];
    table(&mut out, "memory", &header, &rows);
    if let Some(f) = by_stem("memory_scaling") {
        figure(&mut out, f, info.figure_format);
    }

    if !report.accuracy.is_empty() {
        out.push_str("<h2>Accuracy</h2>\n");
        let rows: Vec<Vec<String>> = (report.accuracy.iter())
            .map(|r| {
                let n = [r.num_fewshot.to_string(), r.examples.to_string()];
                let mut row = vec![e(&r.model), e(&r.task), e(&r.metric), format!("{:.4}", r.value)];
                row.extend(n);
                row
            })
            .collect();
        table(
            &mut out,
            "accuracy",
            &["model", "task", "metric", "value", "few-shot", "examples"],
            &rows,
        );
    }
    if !report.verify.is_null() {
        let pretty =
            serde_json::to_string_pretty(&report.verify).unwrap_or_else(|_| report.verify.to_string());
        let _ = writeln!(out, "<h2>Verify</h2>\n<pre id=\"verify\">{}</pre>", e(&pretty));
    }
    let figures_note = match (&info.font, &info.figure_note) {
        (Some(font), _) => format!("figures: PNG drawn with {}", e(font)),
        (None, Some(note)) => format!("figures: SVG ({})", e(note)),
        (None, None) => "figures: SVG".to_owned(),
    };
    let _ = writeln!(
        out,
        "<footer class=\"note\"><p>Generated by caramba. Files: {}. {figures_note}.</p></footer>\n</body>\n</html>",
        e(&info.files.join(", "))
    );
    out
}
