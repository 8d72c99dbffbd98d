//! The result tables printed to the terminal when a benchmark ends.

use std::fmt::Write;

use super::Report;
use super::behavior::BehaviorRecord;
use super::generation::GenerationRecord;

/// Left-aligned first column, right-aligned numbers, two spaces between columns.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut first = true;
        for (i, cell) in cells.enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if !first {
                out.push_str("  ");
            }
            if i == 0 || !numeric(cell) {
                let _ = write!(out, "{cell}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "{}{cell}", " ".repeat(pad));
            }
            first = false;
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &mut rule.iter().map(String::as_str));
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// Numbers (and `[min, max]` spreads after them) are right-aligned, text left-aligned.
fn numeric(cell: &str) -> bool {
    let c = cell.trim_start_matches('-');
    c.starts_with(|ch: char| ch.is_ascii_digit())
}

fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1u64 << 20) as f64)
}

/// Every non-empty table of `report`, plus generations and behaviour outcomes.
pub fn report_tables(
    report: &Report,
    generation: &[GenerationRecord],
    behavior: &[BehaviorRecord],
) -> String {
    let mut out = String::new();
    if !report.perplexity.is_empty() {
        let rows: Vec<Vec<String>> = report
            .perplexity
            .iter()
            .map(|r| {
                vec![
                    r.model.clone(),
                    r.set.clone(),
                    r.cache_kind.clone(),
                    r.block_size.to_string(),
                    r.tokens.to_string(),
                    format!("{:.4}", r.nll),
                    format!("{:.3}", r.perplexity),
                ]
            })
            .collect();
        out += &render(
            &["model", "set", "cache", "block", "tokens", "nll", "perplexity"],
            &rows,
        );
        let sets = report.summary().perplexity_sets;
        if sets.len() > 1 {
            let rows: Vec<Vec<String>> = sets
                .iter()
                .map(|p| {
                    vec![
                        p.set.clone(),
                        format!("{:.3}", p.baseline),
                        format!("{:.3}", p.candidate),
                        format!("{:.3}", p.ratio),
                        p.kv_bytes_ratio.map_or("-".into(), |k| format!("{k:.3}")),
                    ]
                })
                .collect();
            out.push('\n');
            out += &render(
                &[
                    "set",
                    "baseline ppl",
                    "candidate ppl",
                    "ppl ratio",
                    "KV bytes ratio",
                ],
                &rows,
            );
        }
        out.push('\n');
    }
    if !report.latency.is_empty() {
        let rows: Vec<Vec<String>> = report
            .latency
            .iter()
            .map(|r| {
                let s = |x: super::Stat| format!("{:.1} [{:.1}, {:.1}]", x.median, x.min, x.max);
                vec![
                    r.model.clone(),
                    r.cache_kind.clone(),
                    r.prompt_len.to_string(),
                    r.gen_len.to_string(),
                    r.batch_size.to_string(),
                    s(r.prefill_ms),
                    s(r.ttft_ms),
                    s(r.decode_tokens_per_sec),
                    r.runs.to_string(),
                ]
            })
            .collect();
        out += &render(
            &[
                "model",
                "cache",
                "prompt",
                "gen",
                "batch",
                "prefill ms [min, max]",
                "TTFT ms [min, max]",
                "decode tok/s [min, max]",
                "runs",
            ],
            &rows,
        );
        out.push('\n');
    }
    if !report.memory.is_empty() {
        let rows: Vec<Vec<String>> = report
            .memory
            .iter()
            .map(|r| {
                vec![
                    r.model.clone(),
                    r.cache_kind.clone(),
                    r.seq_len.to_string(),
                    r.batch_size.to_string(),
                    r.kv_bytes.to_string(),
                    r.kv_bytes_per_token().map_or("-".into(), |b| format!("{b:.0}")),
                    r.peak_bytes.map_or("n/a".into(), mib),
                    mib(r.model_bytes),
                ]
            })
            .collect();
        out += &render(
            &[
                "model",
                "cache",
                "seq",
                "batch",
                "KV bytes",
                "KV B/token",
                "peak RSS MiB",
                "model MiB",
            ],
            &rows,
        );
        let reasons: Vec<&str> = report
            .memory
            .iter()
            .filter_map(|r| r.peak_unavailable.as_deref())
            .collect();
        if let Some(first) = reasons.first() {
            let _ = writeln!(out, "peak n/a: {first}");
        }
        out.push('\n');
    }
    if !report.accuracy.is_empty() {
        let rows: Vec<Vec<String>> = report
            .accuracy
            .iter()
            .map(|r| {
                vec![
                    r.model.clone(),
                    r.task.clone(),
                    r.metric.clone(),
                    format!("{:.3}", r.value),
                    r.examples.to_string(),
                ]
            })
            .collect();
        out += &render(&["model", "task", "metric", "value", "examples"], &rows);
        out.push('\n');
    }
    if !behavior.is_empty() {
        let rows: Vec<Vec<String>> = behavior
            .iter()
            .map(|r| {
                vec![
                    r.model.clone(),
                    r.id.clone(),
                    r.kind.clone(),
                    if r.passed { "pass" } else { "FAIL" }.into(),
                    short(&r.expected),
                    short(&r.output),
                ]
            })
            .collect();
        out += &render(&["model", "case", "kind", "result", "expected", "output"], &rows);
        out.push('\n');
    }
    for g in generation {
        let _ = writeln!(
            out,
            "[{}] {}\n  → {}\n  ({} tokens, {:.2} s)\n",
            g.model,
            g.prompt,
            g.output.replace('\n', "\n    "),
            g.generated_tokens,
            g.seconds
        );
    }
    out
}

fn short(text: &str) -> String {
    let one_line = text.trim().replace('\n', "⏎");
    if one_line.chars().count() > 40 {
        format!("{}…", one_line.chars().take(39).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let t = super::render(
            &["model", "value"],
            &[
                vec!["a".into(), "1.5".into()],
                vec!["longer".into(), "10.25".into()],
            ],
        );
        assert_eq!(t, "model   value\n------  -----\na         1.5\nlonger  10.25\n");
    }
}
