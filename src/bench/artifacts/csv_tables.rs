//! The raw-data CSVs: `perplexity.csv`, `latency.csv`, `memory.csv`, `accuracy.csv`.
//! One row per result, in the report's order; a header row always (also when there are no results).
//! Numbers are written at full precision (shortest round-trip form); empty cells mean "not available".

use serde::Serialize;

use super::ArtifactError;
use crate::bench::Report;

/// Bytes in a mebibyte.
const MIB: f64 = (1u64 << 20) as f64;

#[derive(Serialize)]
struct PerplexityRow<'a> {
    model: &'a str,
    set: &'a str,
    cache_kind: &'a str,
    block_size: usize,
    tokens: u64,
    nll: f64,
    perplexity: f64,
}

#[derive(Serialize)]
struct LatencyRow<'a> {
    model: &'a str,
    cache_kind: &'a str,
    prompt_len: usize,
    gen_len: usize,
    batch_size: usize,
    runs: usize,
    prefill_ms_median: f64,
    prefill_ms_min: f64,
    prefill_ms_max: f64,
    ttft_ms_median: f64,
    ttft_ms_min: f64,
    ttft_ms_max: f64,
    decode_tokens_per_sec_median: f64,
    decode_tokens_per_sec_min: f64,
    decode_tokens_per_sec_max: f64,
}

#[derive(Serialize)]
struct MemoryRow<'a> {
    model: &'a str,
    cache_kind: &'a str,
    seq_len: usize,
    batch_size: usize,
    kv_bytes: u64,
    kv_mib: f64,
    kv_bytes_per_token: Option<f64>,
    peak_bytes: Option<u64>,
    peak_mib: Option<f64>,
    peak_unavailable: Option<&'a str>,
    model_bytes: u64,
    model_mib: f64,
}

#[derive(Serialize)]
struct AccuracyRow<'a> {
    model: &'a str,
    task: &'a str,
    metric: &'a str,
    value: f64,
    examples: u64,
    num_fewshot: usize,
}

/// Column names of each CSV, in file order (written even when a table has no rows).
pub(crate) const PERPLEXITY_COLUMNS: &[&str] = &[
    "model",
    "set",
    "cache_kind",
    "block_size",
    "tokens",
    "nll",
    "perplexity",
];
pub(crate) const LATENCY_COLUMNS: &[&str] = &[
    "model",
    "cache_kind",
    "prompt_len",
    "gen_len",
    "batch_size",
    "runs",
    "prefill_ms_median",
    "prefill_ms_min",
    "prefill_ms_max",
    "ttft_ms_median",
    "ttft_ms_min",
    "ttft_ms_max",
    "decode_tokens_per_sec_median",
    "decode_tokens_per_sec_min",
    "decode_tokens_per_sec_max",
];
pub(crate) const MEMORY_COLUMNS: &[&str] = &[
    "model",
    "cache_kind",
    "seq_len",
    "batch_size",
    "kv_bytes",
    "kv_mib",
    "kv_bytes_per_token",
    "peak_bytes",
    "peak_mib",
    "peak_unavailable",
    "model_bytes",
    "model_mib",
];
pub(crate) const ACCURACY_COLUMNS: &[&str] = &["model", "task", "metric", "value", "examples", "num_fewshot"];

/// Serializes `rows` under `columns` into CSV bytes; `file` names the CSV in errors.
fn to_csv<R: Serialize>(
    file: &str,
    columns: &[&str],
    rows: impl Iterator<Item = R>,
) -> Result<Vec<u8>, ArtifactError> {
    let err = |source| ArtifactError::Csv {
        path: file.into(),
        source,
    };
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    writer.write_record(columns).map_err(err)?;
    for row in rows {
        writer.serialize(row).map_err(err)?;
    }
    writer.into_inner().map_err(|e| err(e.into_error().into()))
}

/// `(file name, CSV bytes)` of every table of `report`.
pub(crate) fn csv_files(report: &Report) -> Result<Vec<(&'static str, Vec<u8>)>, ArtifactError> {
    let perplexity = report.perplexity.iter().map(|r| PerplexityRow {
        model: &r.model,
        set: &r.set,
        cache_kind: &r.cache_kind,
        block_size: r.block_size,
        tokens: r.tokens,
        nll: r.nll,
        perplexity: r.perplexity,
    });
    let latency = report.latency.iter().map(|r| LatencyRow {
        model: &r.model,
        cache_kind: &r.cache_kind,
        prompt_len: r.prompt_len,
        gen_len: r.gen_len,
        batch_size: r.batch_size,
        runs: r.runs,
        prefill_ms_median: r.prefill_ms.median,
        prefill_ms_min: r.prefill_ms.min,
        prefill_ms_max: r.prefill_ms.max,
        ttft_ms_median: r.ttft_ms.median,
        ttft_ms_min: r.ttft_ms.min,
        ttft_ms_max: r.ttft_ms.max,
        decode_tokens_per_sec_median: r.decode_tokens_per_sec.median,
        decode_tokens_per_sec_min: r.decode_tokens_per_sec.min,
        decode_tokens_per_sec_max: r.decode_tokens_per_sec.max,
    });
    let memory = report.memory.iter().map(|r| MemoryRow {
        model: &r.model,
        cache_kind: &r.cache_kind,
        seq_len: r.seq_len,
        batch_size: r.batch_size,
        kv_bytes: r.kv_bytes,
        kv_mib: r.kv_bytes as f64 / MIB,
        kv_bytes_per_token: r.kv_bytes_per_token(),
        peak_bytes: r.peak_bytes,
        peak_mib: r.peak_bytes.map(|b| b as f64 / MIB),
        peak_unavailable: r.peak_unavailable.as_deref(),
        model_bytes: r.model_bytes,
        model_mib: r.model_bytes as f64 / MIB,
    });
    let accuracy = report.accuracy.iter().map(|r| AccuracyRow {
        model: &r.model,
        task: &r.task,
        metric: &r.metric,
        value: r.value,
        examples: r.examples,
        num_fewshot: r.num_fewshot,
    });
    Ok(vec![
        (
            "perplexity.csv",
            to_csv("perplexity.csv", PERPLEXITY_COLUMNS, perplexity)?,
        ),
        ("latency.csv", to_csv("latency.csv", LATENCY_COLUMNS, latency)?),
        ("memory.csv", to_csv("memory.csv", MEMORY_COLUMNS, memory)?),
        (
            "accuracy.csv",
            to_csv("accuracy.csv", ACCURACY_COLUMNS, accuracy)?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header serde derives from a row type.
    fn derived_header<R: Serialize>(row: R) -> Vec<String> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.serialize(row).expect("serialize");
        let bytes = writer.into_inner().expect("flush");
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        reader
            .headers()
            .expect("header")
            .iter()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn column_lists_match_the_row_types() {
        let p = PerplexityRow {
            model: "m",
            set: "in_domain",
            cache_kind: "c",
            block_size: 1,
            tokens: 2,
            nll: 0.5,
            perplexity: 1.6,
        };
        assert_eq!(derived_header(p), PERPLEXITY_COLUMNS);
        let l = LatencyRow {
            model: "m",
            cache_kind: "c",
            prompt_len: 1,
            gen_len: 2,
            batch_size: 3,
            runs: 4,
            prefill_ms_median: 1.0,
            prefill_ms_min: 1.0,
            prefill_ms_max: 1.0,
            ttft_ms_median: 1.0,
            ttft_ms_min: 1.0,
            ttft_ms_max: 1.0,
            decode_tokens_per_sec_median: 1.0,
            decode_tokens_per_sec_min: 1.0,
            decode_tokens_per_sec_max: 1.0,
        };
        assert_eq!(derived_header(l), LATENCY_COLUMNS);
        let m = MemoryRow {
            model: "m",
            cache_kind: "c",
            seq_len: 1,
            batch_size: 1,
            kv_bytes: 1,
            kv_mib: 1.0,
            kv_bytes_per_token: Some(1.0),
            peak_bytes: Some(1),
            peak_mib: Some(1.0),
            peak_unavailable: None,
            model_bytes: 1,
            model_mib: 1.0,
        };
        assert_eq!(derived_header(m), MEMORY_COLUMNS);
        let a = AccuracyRow {
            model: "m",
            task: "t",
            metric: "acc",
            value: 0.5,
            examples: 3,
            num_fewshot: 0,
        };
        assert_eq!(derived_header(a), ACCURACY_COLUMNS);
    }
}
