//! `prepare`: text files → a `.npy` token file (uint16 when the vocabulary fits, else int32),
//! written atomically (a temporary file renamed into place).
//!
//! Inputs are glob patterns (sorted, deduplicated). With `debian_package`, the package is fetched
//! with `apt-get download` into the cache (`$CARAMBA_CACHE`, else `~/.cache/caramba`), unpacked
//! with `dpkg-deb -x`, and relative patterns are matched inside the unpacked tree. Documents are
//! separated by the tokenizer's end-of-text id when it has one. [`write_source_record`] keeps
//! what a file was made from (package, version, files, tokens) in `<file>.source.json`.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::batches::TokenDataset;
use super::error::DataError;
use super::npy::{NpyWriter, TokenDtype};
use super::spec::{DataSpec, PrepareSpec};
use super::tokenizer::Tokenizer;
use crate::console::Progress;

/// What `prepare` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareSummary {
    pub output: PathBuf,
    pub files: usize,
    pub bytes: u64,
    pub tokens: usize,
    pub dtype: TokenDtype,
    /// `(package, version)` of the Debian package the text came from, when there was one.
    pub package: Option<(String, String)>,
}

impl fmt::Display for PrepareSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} files, {:.2} MB of text, {} tokens ({:?}, {:.2} bytes/token)",
            self.output.display(),
            self.files,
            self.bytes as f64 / 1e6,
            self.tokens,
            self.dtype,
            self.bytes as f64 / self.tokens.max(1) as f64,
        )
    }
}

/// A data block made ready for training: the validated dataset and its tokenizer.
#[derive(Debug, Clone)]
pub struct PreparedData {
    pub dataset: TokenDataset,
    pub tokenizer: Tokenizer,
}

/// Open the data block's token file, first building it from `prepare:` when it does not exist.
/// `val_frac_default` and `tokenizer_default` apply where the block leaves them out.
pub fn ensure_prepared(
    spec: &DataSpec,
    val_frac_default: f64,
    tokenizer_default: &str,
) -> Result<PreparedData, DataError> {
    let name = spec.tokenizer.as_deref().unwrap_or(tokenizer_default);
    let tokenizer = Tokenizer::from_name(name)?;
    let path = Path::new(&spec.path);
    if !path.exists() {
        match &spec.prepare {
            Some(p) => {
                let tok = match p.tokenizer.as_deref() {
                    Some(other) if other != name => Tokenizer::from_name(other)?,
                    _ => tokenizer.clone(),
                };
                let summary = prepare(p, &tok, path)?;
                tracing::info!("prepared {summary}");
            }
            None => {
                return Err(DataError::Missing {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    let val_frac = spec.val_frac.unwrap_or(val_frac_default);
    let dataset = TokenDataset::open(path, spec.block_size, val_frac, tokenizer.vocab_size())?;
    Ok(PreparedData { dataset, tokenizer })
}

/// Tokenize the inputs of `spec` with `tokenizer` and write `output` atomically.
pub fn prepare(
    spec: &PrepareSpec,
    tokenizer: &Tokenizer,
    output: &Path,
) -> Result<PrepareSummary, DataError> {
    let root = match &spec.debian_package {
        Some(pkg) => Some(unpack_debian_package(pkg)?),
        None => None,
    };
    let package = spec.debian_package.as_ref().map(|pkg| {
        (
            pkg.clone(),
            debian_package_version(pkg).unwrap_or_else(|| "unknown".into()),
        )
    });
    let files = expand_inputs(&spec.input, root.as_deref())?;
    let eos = if spec.separate_documents {
        tokenizer.eos_id()
    } else {
        None
    };
    let dtype = TokenDtype::for_vocab(tokenizer.vocab_size());
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    let tmp = crate::record::temp_path(output);
    let result = write_tokens(&files, tokenizer, eos, dtype, &tmp).and_then(|(tokens, bytes)| {
        if tokens == 0 {
            return Err(DataError::Empty);
        }
        crate::record::commit(&tmp, output).map_err(|e| DataError::io(output, e.into_io()))?;
        Ok(PrepareSummary {
            output: output.to_path_buf(),
            files: files.len(),
            bytes,
            tokens,
            dtype,
            package,
        })
    });
    if result.is_err() {
        crate::record::discard(&tmp);
    }
    result
}

/// Tokenize `files` in order into the `.npy` at `tmp`; returns (tokens, text bytes).
fn write_tokens(
    files: &[PathBuf],
    tokenizer: &Tokenizer,
    eos: Option<u32>,
    dtype: TokenDtype,
    tmp: &Path,
) -> Result<(usize, u64), DataError> {
    let io = |e| DataError::io(tmp, e);
    let mut writer = NpyWriter::new(fs::File::create(tmp).map_err(io)?, dtype).map_err(io)?;
    let progress = Progress::new(files.len() as u64, "prepare");
    let mut bytes = 0u64;
    for file in files {
        let raw = fs::read(file).map_err(|e| DataError::io(file, e))?;
        bytes += raw.len() as u64;
        let doc = match tokenizer.encode_raw(&raw) {
            Some(doc) => doc,
            None => {
                let text = String::from_utf8(raw).map_err(|_| DataError::NotText {
                    path: file.clone(),
                    tokenizer: "tokenizer.json".into(),
                })?;
                tokenizer.encode(&text)?
            }
        };
        if !writer.is_empty() && !doc.is_empty() {
            writer.push(eos.as_slice()).map_err(io)?;
        }
        writer.push(&doc).map_err(io)?;
        progress.inc(1);
        progress.set_message(&format!("{} tokens", writer.len()));
    }
    let tokens = writer.len() as usize;
    writer.finish().and_then(|f| f.sync_all()).map_err(io)?;
    Ok((tokens, bytes))
}

/// Sorted, deduplicated files matching `patterns`; relative patterns are matched under `root`
/// when given. Every pattern must match at least one file.
fn expand_inputs(patterns: &[String], root: Option<&Path>) -> Result<Vec<PathBuf>, DataError> {
    if patterns.is_empty() {
        return Err(DataError::NoInput {
            patterns: "(no `input` patterns given)".into(),
        });
    }
    let mut files = BTreeSet::new();
    for pattern in patterns {
        let full = match root {
            Some(root) if Path::new(pattern).is_relative() => {
                root.join(pattern).to_string_lossy().into_owned()
            }
            _ => pattern.clone(),
        };
        let paths = glob::glob(&full).map_err(|e| DataError::BadPattern {
            pattern: pattern.clone(),
            reason: e.to_string(),
        })?;
        let mut matched = 0;
        for entry in paths {
            let path = entry.map_err(|e| DataError::io(e.path().to_path_buf(), e.into()))?;
            if path.is_file() {
                matched += 1;
                files.insert(path);
            }
        }
        if matched == 0 {
            return Err(DataError::NoInput { patterns: full });
        }
    }
    Ok(files.into_iter().collect())
}

/// The cache directory: `$CARAMBA_CACHE`, else `~/.cache/caramba`, else `./.caramba-cache`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARAMBA_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("caramba"),
        None => PathBuf::from(".caramba-cache"),
    }
}

/// Download and unpack `package` once; returns the unpacked root (`<cache>/debian/<pkg>/root`).
pub fn unpack_debian_package(package: &str) -> Result<PathBuf, DataError> {
    if package.is_empty()
        || !package
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.:_".contains(c))
    {
        return Err(DataError::Command {
            command: format!("apt-get download {package}"),
            reason: "not a Debian package name".into(),
        });
    }
    let dir = cache_dir().join("debian").join(package);
    let root = dir.join("root");
    let done = dir.join("UNPACKED");
    if done.exists() {
        return Ok(root);
    }
    fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let deb = find_deb(&dir, package)?;
    let deb = match deb {
        Some(deb) => deb,
        None => {
            tracing::info!("downloading Debian package {package} into {}", dir.display());
            run(Command::new("apt-get")
                .arg("download")
                .arg(package)
                .current_dir(&dir))?;
            find_deb(&dir, package)?.ok_or_else(|| DataError::Command {
                command: format!("apt-get download {package}"),
                reason: format!("no .deb appeared in {}", dir.display()),
            })?
        }
    };
    if root.exists() {
        fs::remove_dir_all(&root).map_err(|e| DataError::io(&root, e))?;
    }
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    fs::write(&done, deb.display().to_string()).map_err(|e| DataError::io(&done, e))?;
    Ok(root)
}

/// The version of a package [`unpack_debian_package`] unpacked, from its `.deb` name
/// (`name_version_arch.deb`; apt writes an epoch's `:` as `%3a`); `None` before it is unpacked.
pub fn debian_package_version(package: &str) -> Option<String> {
    let marker = cache_dir().join("debian").join(package).join("UNPACKED");
    let deb = fs::read_to_string(marker).ok()?;
    version_of_deb(Path::new(deb.trim()))
}

fn version_of_deb(deb: &Path) -> Option<String> {
    let name = deb.file_name()?.to_str()?.strip_suffix(".deb")?;
    let mut parts = name.split('_');
    let (_pkg, version) = (parts.next()?, parts.next()?);
    Some(version.replace("%3a", ":").replace("%3A", ":"))
}

/// What a prepared token file was made from; stored as `<file>.source.json` beside it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceRecord {
    /// Debian package the text came from, when there was one.
    pub debian_package: Option<String>,
    /// Its version (`unknown` when the cache lost it).
    pub package_version: Option<String>,
    /// The `input:` globs.
    pub input: Vec<String>,
    /// Text files tokenized.
    pub files: usize,
    /// Bytes of text read.
    pub bytes: u64,
    /// Tokens written.
    pub tokens: usize,
}

/// `<file>.source.json` of a token file.
pub fn source_record_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".source.json");
    PathBuf::from(name)
}

/// Write `<output>.source.json` for a file [`prepare`] just wrote from `spec`.
pub fn write_source_record(spec: &PrepareSpec, summary: &PrepareSummary) -> Result<(), DataError> {
    let record = SourceRecord {
        debian_package: summary.package.as_ref().map(|p| p.0.clone()),
        package_version: summary.package.as_ref().map(|p| p.1.clone()),
        input: spec.input.clone(),
        files: summary.files,
        bytes: summary.bytes,
        tokens: summary.tokens,
    };
    let path = source_record_path(&summary.output);
    crate::record::write_json(&path, &record).map_err(|e| DataError::io(&path, e.into_io()))
}

/// The record beside a token file, when there is a readable one.
pub fn read_source_record(file: &Path) -> Option<SourceRecord> {
    let text = fs::read_to_string(source_record_path(file)).ok()?;
    serde_json::from_str(&text).ok()
}

fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>, DataError> {
    let prefix = format!("{package}_");
    let entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut debs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .collect();
    debs.sort();
    Ok(debs.pop())
}

fn run(cmd: &mut Command) -> Result<(), DataError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| DataError::Command {
        command: shown.clone(),
        reason: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(DataError::Command {
        command: shown,
        reason: format!("{}: {}", out.status, stderr.trim()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmatched_pattern_is_named() {
        let err = expand_inputs(&["/nonexistent-dir/*.txt".into()], None).expect_err("no match");
        assert!(err.to_string().contains("/nonexistent-dir/*.txt"), "{err}");
    }

    #[test]
    fn versions_come_from_the_deb_name() {
        let v = |name: &str| version_of_deb(Path::new(name));
        assert_eq!(
            v("/c/developers-reference_12.18_all.deb").as_deref(),
            Some("12.18")
        );
        assert_eq!(v("diffutils-doc_1%3a3.8-4_all.deb").as_deref(), Some("1:3.8-4"));
        assert_eq!(v("not-a-deb.txt"), None);
    }

    #[test]
    fn package_names_are_checked_before_running_anything() {
        let err = unpack_debian_package("foo; rm -rf /").expect_err("bad name");
        assert!(err.to_string().contains("not a Debian package name"), "{err}");
    }
}
