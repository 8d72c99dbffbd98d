//! The publication artifacts of an upcycle: perplexity (from verification) and whatever the
//! benchmarks measured (`crate::bench`), written by `crate::bench::artifacts` (CSV, LaTeX,
//! figures, HTML, report.json), with the upcycle's own record merged into `report.json`.

use std::path::{Path, PathBuf};

use super::UpcycleError;
use super::verify::Verification;
use crate::bench::{Metadata, PerplexityResult, Report};

pub fn perplexity_rows(v: &Verification, block_size: usize) -> Vec<PerplexityResult> {
    [
        ("teacher", v.teacher_perplexity, v.teacher_nll),
        ("student", v.student_perplexity, v.student_nll),
    ]
    .into_iter()
    .map(|(model, perplexity, nll)| PerplexityResult {
        model: model.into(),
        set: crate::bench::spec::IN_DOMAIN.into(),
        source: None,
        perplexity,
        nll,
        tokens: v.tokens as u64,
        block_size,
        cache_kind: "none (full forward)".into(),
    })
    .collect()
}

/// Write every artifact into `dir`, then merge `record` (the upcycle's own summary and phases)
/// into `report.json`: its `summary` gains the upcycle summary fields and it gains `upcycle`.
pub fn write(report: &Report, record: &serde_json::Value, dir: &Path) -> Result<Vec<PathBuf>, UpcycleError> {
    let files = crate::bench::artifacts::write_all(report, dir).map_err(|e| UpcycleError::Write {
        what: format!("the artifacts into {}", dir.display()),
        detail: e.to_string(),
    })?;
    let path = dir.join("report.json");
    let io = |e: std::io::Error| UpcycleError::Io {
        path: path.clone(),
        source: e,
    };
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).map_err(io)?)
        .map_err(|e| io(std::io::Error::other(e)))?;
    if let (Some(obj), Some(extra)) = (
        json.as_object_mut(),
        record.get("summary").and_then(|s| s.as_object()),
    ) {
        let summary = obj.entry("summary").or_insert_with(|| serde_json::json!({}));
        if let Some(s) = summary.as_object_mut() {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        obj.insert("upcycle".into(), record.clone());
    }
    crate::record::write_json(&path, &json).map_err(|e| io(e.into_io()))?;
    Ok(files)
}

/// Metadata of this process for a report; `dtype` is the student's compute dtype.
pub fn metadata(
    name: &str,
    manifest: &str,
    target: &str,
    device: &str,
    dtype: candle_core::DType,
) -> Metadata {
    crate::bench::metadata::metadata(name, manifest, target, device, crate::device::dtype_name(dtype))
}
