//! Facts: a report (any JSON, usually a run's `report.json`) flattened to `path = value` lines
//! that a model can read — the scalars under the chosen top-level keys, numbers at 4 significant
//! digits, long lists cut — and the number audit: the numbers a draft states that no fact
//! supports (a small model invents numbers; the audit says which).

use serde::Serialize;
use serde_json::Value;

/// At most this many items of one list are shown.
const MAX_ITEMS: usize = 6;

/// The facts a prompt shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facts {
    /// `summary.perplexity.baseline = 15.07`.
    pub lines: Vec<String>,
    /// Every number shown (as rounded), for the audit.
    pub numbers: Vec<f64>,
    /// Lines were left out to stay under the character cap.
    pub truncated: bool,
}

impl Facts {
    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        if self.truncated {
            s.push_str("\n(… more facts left out)");
        }
        s
    }
}

/// The facts of `report` under `keys` (all of it when `keys` is empty or names none that
/// exist), in at most `max_chars` characters.
pub fn collect(report: &Value, keys: &[String], max_chars: usize) -> Facts {
    let mut lines = Vec::new();
    let chosen: Vec<(&str, &Value)> = keys
        .iter()
        .filter_map(|k| report.get(k).map(|v| (k.as_str(), v)))
        .collect();
    if chosen.is_empty() {
        flatten("", report, &mut lines);
    } else {
        for (k, v) in chosen {
            flatten(k, v, &mut lines);
        }
    }
    let mut out = Facts::default();
    let mut used = 0;
    for (line, numbers) in lines {
        if used + line.len() + 1 > max_chars {
            out.truncated = true;
            break;
        }
        used += line.len() + 1;
        out.lines.push(line);
        out.numbers.extend(numbers);
    }
    out
}

fn flatten(path: &str, v: &Value, out: &mut Vec<(String, Vec<f64>)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(&p, child, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().take(MAX_ITEMS).enumerate() {
                flatten(&format!("{path}[{i}]"), child, out);
            }
            if items.len() > MAX_ITEMS {
                out.push((
                    format!("{path}: {} more items left out", items.len() - MAX_ITEMS),
                    Vec::new(),
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let shown = sig4(x);
            let rounded = shown.parse().unwrap_or(x);
            out.push((format!("{path} = {shown}"), vec![rounded]));
        }
        Value::String(s) => {
            let s: String = s.chars().take(120).collect();
            out.push((format!("{path} = {s}"), Vec::new()));
        }
        Value::Bool(b) => out.push((format!("{path} = {b}"), Vec::new())),
        Value::Null => {}
    }
}

/// `x` at 4 significant digits, without trailing zeros (`15.07`, `0.6188`, `23040`).
pub fn sig4(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{}", x as i64);
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (3 - magnitude).clamp(0, 12) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Numbers in `text` (as written), e.g. `15.07`, `2.0`, `-3`, `61.9` (from `61.9%`).
pub fn numbers_in(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            // why: a minus sign only after a space or bracket (`SmolLM2-135M` holds 2 and 135, not −135).
            let signed = i > 0
                && bytes[i - 1] == b'-'
                && (i == 1 || matches!(bytes[i - 2], b' ' | b'(' | b'[' | b'\n'));
            let start = if signed { i - 1 } else { i };
            let mut j = i;
            while j < bytes.len()
                && (bytes[j].is_ascii_digit()
                    || bytes[j] == b','
                    || (bytes[j] == b'.' && j + 1 < bytes.len() && bytes[j + 1].is_ascii_digit()))
            {
                j += 1;
            }
            let raw = text[start..j].trim_end_matches(',');
            if let Ok(x) = raw.replace(',', "").parse::<f64>() {
                out.push((raw.to_string(), x));
            }
            i = j.max(i + 1);
            // why: the rest of a word (`135M`, `2x`) is part of a name or a unit, not a new number.
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The numbers `text` states that no fact supports: not within 1% of a fact, nor — for a
/// fractional fact (a ratio) — of it × 100 (a percentage) or of its change (`(1 − r) × 100`).
/// Small integers (≤ 10: counts, section numbers) are not checked.
pub fn unsupported(text: &str, facts: &[f64]) -> Vec<String> {
    let close = |a: f64, b: f64| (a - b).abs() <= 0.01 * b.abs().max(1e-9) + 1e-9;
    let supports = |x: f64, f: f64| {
        close(x, f)
            || (f.fract() != 0.0
                && (close(x, f * 100.0) || close(x, (1.0 - f) * 100.0) || close(x, (f - 1.0) * 100.0)))
    };
    numbers_in(text)
        .into_iter()
        .filter(|(_, x)| !(x.fract() == 0.0 && x.abs() <= 10.0))
        .filter(|(_, x)| !facts.iter().any(|f| supports(*x, *f)))
        .map(|(raw, _)| raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_the_chosen_keys_with_rounded_numbers() {
        let r = json!({"metadata": {"name": "x"}, "summary": {"ppl": {"baseline": 15.07381938803109, "ratio": 0.6188304667426194}, "bytes": 23040}, "latency": [1, 2]});
        let f = collect(&r, &["summary".into(), "nope".into()], 10_000);
        assert_eq!(
            f.lines,
            vec![
                "summary.bytes = 23040",
                "summary.ppl.baseline = 15.07",
                "summary.ppl.ratio = 0.6188"
            ]
        );
        assert_eq!(f.numbers, vec![23040.0, 15.07, 0.6188]);
        let all = collect(&r, &[], 10_000);
        assert_eq!(all.lines.len(), 6);
        let cut = collect(&r, &[], 40);
        assert!(cut.truncated && cut.lines.len() < 6);
    }

    #[test]
    fn long_lists_are_cut() {
        let r = json!({"a": (0..20).collect::<Vec<_>>()});
        let f = collect(&r, &[], 10_000);
        assert_eq!(f.lines.len(), MAX_ITEMS + 1);
        assert!(f.lines.last().unwrap().contains("14 more items"));
    }

    #[test]
    fn sig4_rounds() {
        assert_eq!(sig4(15.07381938803109), "15.07");
        assert_eq!(sig4(0.000123456), "0.0001235");
        assert_eq!(sig4(23040.0), "23040");
        assert_eq!(sig4(92.62495320402874), "92.62");
        assert_eq!(sig4(12345.678), "12346");
    }

    #[test]
    fn the_audit_flags_invented_numbers_only() {
        let facts = [15.07, 9.328, 0.6188, 23040.0];
        let text = "Perplexity fell from 15.07 to 9.33 (a 38.1% drop, ratio 0.62), with 23,040 bytes; \
                    accuracy rose to 97.5% over 3 seeds in 2025.";
        assert_eq!(unsupported(text, &facts), vec!["97.5", "2025"]);
        assert_eq!(
            numbers_in("-3 and 1,024.5"),
            vec![("-3".to_string(), -3.0), ("1,024.5".to_string(), 1024.5)]
        );
        let names: Vec<f64> = numbers_in("SmolLM2-135M, a 2x cut")
            .into_iter()
            .map(|(_, x)| x)
            .collect();
        assert_eq!(names, vec![2.0, 135.0, 2.0]);
        assert_eq!(
            unsupported("a batch of 100 and 1000 samples", &[1.0, 10.0]),
            vec!["100", "1000"]
        );
    }
}
