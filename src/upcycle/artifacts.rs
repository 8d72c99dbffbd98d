//! The publication artifacts of an upcycle: perplexity (from verification), decode latency of
//! teacher and student measured interleaved in this process, exact KV-cache bytes per sequence
//! length and cache kind, written by `crate::bench::artifacts` (CSV, LaTeX, figures, HTML,
//! report.json), with the upcycle's own record merged into `report.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use rand::{Rng, SeedableRng};

use super::UpcycleError;
use super::verify::Verification;
use crate::bench::{LatencyResult, MemoryResult, Metadata, PerplexityResult, Report, Stat};
use crate::cache::CacheKind;
use crate::infer::Generator;
use crate::model::{LanguageModel, ModelSpec};

/// Exact cached bytes per token of `spec` when K and V are stored as `kind`.
pub fn kv_bytes_per_token(spec: &ModelSpec, kind: CacheKind) -> usize {
    crate::compiler::stats::kv_bytes(&spec.topology, kind) as usize
}

/// Settings of the latency grid.
pub struct LatencyGrid {
    pub prompt_lens: Vec<usize>,
    pub gen_len: usize,
    pub warmup: usize,
    pub timed: usize,
}

/// Greedy decode timings of each model over the grid, models interleaved run by run.
pub fn measure_latency(
    models: &[(&str, &LanguageModel, usize)],
    grid: &LatencyGrid,
    device: &Device,
) -> Result<Vec<LatencyResult>, UpcycleError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut out = Vec::new();
    for &prompt_len in &grid.prompt_lens {
        let mut samples: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); models.len()];
        for run in 0..grid.warmup + grid.timed {
            for (i, (_, model, vocab)) in models.iter().enumerate() {
                let prompt: Vec<u32> = (0..prompt_len)
                    .map(|_| rng.random_range(0..*vocab as u32))
                    .collect();
                let mut g = Generator::new(model, prompt_len + grid.gen_len + 1, DType::F32, device);
                let t0 = Instant::now();
                let logits = g
                    .prefill(&prompt)
                    .map_err(|e| UpcycleError::Mismatch(e.to_string()))?;
                let prefill = t0.elapsed().as_secs_f64();
                let mut next = argmax_last(&logits)?;
                let t1 = Instant::now();
                let mut first = None;
                for _ in 0..grid.gen_len {
                    let logits = g
                        .decode_step(&[next])
                        .map_err(|e| UpcycleError::Mismatch(e.to_string()))?;
                    next = argmax_last(&logits)?;
                    first.get_or_insert(t1.elapsed().as_secs_f64());
                }
                let decode = t1.elapsed().as_secs_f64();
                if run >= grid.warmup {
                    samples[i].0.push(prefill * 1e3);
                    samples[i].1.push((prefill + first.unwrap_or(0.0)) * 1e3);
                    samples[i].2.push(grid.gen_len as f64 / decode.max(1e-9));
                }
            }
        }
        for ((name, _, _), (p, ttft, tps)) in models.iter().zip(samples) {
            let stat = |v: &[f64]| {
                Stat::from_samples(v).ok_or_else(|| UpcycleError::Mismatch("no timed runs".into()))
            };
            out.push(LatencyResult {
                model: name.to_string(),
                prompt_len,
                gen_len: grid.gen_len,
                batch_size: 1,
                cache_kind: "fp32".into(),
                prefill_ms: stat(&p)?,
                ttft_ms: stat(&ttft)?,
                decode_tokens_per_sec: stat(&tps)?,
                runs: grid.timed,
            });
        }
    }
    Ok(out)
}

fn argmax_last(logits: &candle_core::Tensor) -> Result<u32, UpcycleError> {
    let v: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    let vocab = *logits.dims().last().unwrap_or(&1);
    let last = &v[v.len() - vocab..];
    Ok(last
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32))
}

/// Exact KV bytes for each model × sequence length × cache kind (batch 1).
pub fn memory_rows(models: &[(&str, &ModelSpec, u64)], seq_lens: &[usize]) -> Vec<MemoryResult> {
    let kinds = [CacheKind::Fp16, CacheKind::Q8_0, CacheKind::Q4_0];
    let mut out = Vec::new();
    for (name, spec, model_bytes) in models {
        for kind in kinds {
            let per_token = kv_bytes_per_token(spec, kind) as u64;
            for &seq_len in seq_lens {
                out.push(MemoryResult {
                    model: name.to_string(),
                    seq_len,
                    batch_size: 1,
                    cache_kind: kind.name().into(),
                    kv_bytes: per_token * seq_len as u64,
                    peak_bytes: None,
                    peak_unavailable: Some(
                        "both models share one process; its peak RSS is in report.json's `process_peak_rss_bytes`".into(),
                    ),
                    model_bytes: *model_bytes,
                });
            }
        }
    }
    out
}

/// Peak resident set of this process (Linux `VmHWM`), when readable.
pub fn process_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn perplexity_rows(v: &Verification, block_size: usize) -> Vec<PerplexityResult> {
    [
        ("teacher", v.teacher_perplexity, v.teacher_nll),
        ("student", v.student_perplexity, v.student_nll),
    ]
    .into_iter()
    .map(|(model, perplexity, nll)| PerplexityResult {
        model: model.into(),
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
    let files = crate::bench::artifacts::write_all(report, dir)
        .map_err(|e| UpcycleError::Mismatch(format!("writing artifacts: {e}")))?;
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
    crate::experiment::write_json(&path, &json).map_err(io)?;
    Ok(files)
}

/// Metadata of this process for a report.
pub fn metadata(name: &str, manifest: &str, target: &str, device: &str) -> Metadata {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Metadata {
        name: name.into(),
        manifest: manifest.into(),
        target: target.into(),
        git_revision: crate::experiment::git_revision(),
        device: device.into(),
        dtype: "f32".into(),
        build_flags: crate::experiment::build_features()
            .into_iter()
            .map(String::from)
            .collect(),
        versions: [("caramba".to_string(), env!("CARGO_PKG_VERSION").to_string())]
            .into_iter()
            .collect(),
        created_at: rfc3339(created),
    }
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (Howard Hinnant's civil-from-days).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
