//! Pretty JSON written atomically (`run.json`, `summary.json`, `report.json`, `model_spec.json`).

use std::path::Path;

use serde::Serialize;

use super::RecordError;
use super::atomic::write_atomic;

/// `value` as pretty JSON, replacing `path` atomically ([`write_atomic`]).
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), RecordError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| RecordError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pretty_json_that_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v.json");
        let x: f64 = rand::random();
        write_json(&path, &serde_json::json!({"x": x, "n": [1, 2]})).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains('\n'), "pretty: {text}");
        let back: serde_json::Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(back["x"].as_f64(), Some(x));
    }
}
