//! TensorBoard event files: `<run>/tb/<run_id>/events.out.tfevents.<unix secs>.<hostname>`.
//!
//! A file is a sequence of TFRecords ([`super::tfrecord`]) holding `Event` protos
//! ([`super::proto`]): first `{wall_time, file_version: "brain.Event:2"}`, then one event per
//! [`Instrument::scalars`] call, `{wall_time, step, summary: {value: [{tag, simple_value}…]}}`.
//! TensorBoard reads the scalars under their tags (`train/loss`, `eval/val_loss`, …);
//! `scripts/check_tensorboard.py` checks a run's files with the real `tensorboard` package.
//!
//! Resume. TensorBoard reads every events file of a directory in name order (the Unix seconds in
//! the name make that creation order), so a resumed run starts a new file rather than appending
//! to the old one. It would also hide an old file's events past the resume step by itself (its
//! reader purges "orphaned" steps when a step goes backwards), but the files are cut anyway, so
//! that on disk, as in `metrics.jsonl`, no event after step K survives a resume from K: each old
//! file is truncated before its first record with `step > K` (and before a torn or corrupt
//! record). A fresh start (no checkpoint) removes the old events files of the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::events::unix_seconds;
use super::proto::{event_step, file_version_event, scalars_event};
use super::tfrecord::{read_records, write_record};
use super::{Instrument, InstrumentError};

/// The subdirectory of the run directory that holds TensorBoard runs.
pub const TB_DIR: &str = "tb";

/// What every events file name contains (TensorBoard looks for `tfevents`).
const FILE_PREFIX: &str = "events.out.tfevents.";

/// The writer of one run's TensorBoard events file.
pub struct TensorBoardWriter {
    dir: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    record: Vec<u8>,
}

impl TensorBoardWriter {
    /// Start a new events file in `<run_dir>/tb/<run_id>/`. With `keep_through = Some(k)` the
    /// directory's older files are cut back to their events with `step <= k`; with `None` they
    /// are removed.
    pub fn open(run_dir: &Path, run_id: &str, keep_through: Option<usize>) -> Result<Self, InstrumentError> {
        let dir = run_dir.join(TB_DIR).join(dir_name(run_id));
        fs::create_dir_all(&dir).map_err(|source| InstrumentError::Io {
            action: "create the TensorBoard directory",
            path: dir.clone(),
            source,
            hint: format!(
                "TensorBoard files go to `<run dir>/{TB_DIR}/<run id>/`: make `{}` a writable \
                 directory, or remove `tensorboard` from `defaults.logging.instrument`",
                run_dir.join(TB_DIR).display()
            ),
        })?;
        for old in events_files(&dir)? {
            match keep_through {
                Some(k) => cut_events_file(&old, k)?,
                None => fs::remove_file(&old)
                    .map_err(|e| InstrumentError::io("remove the old events file", &old, e))?,
            }
        }
        let secs = unix_seconds() as u64;
        let host = hostname();
        let (path, file) = create_unique(&dir, &format!("{FILE_PREFIX}{secs:010}.{host}"))?;
        let mut writer = Self {
            dir,
            path,
            out: BufWriter::new(file),
            record: Vec::new(),
        };
        writer.append(&file_version_event(unix_seconds()))?;
        writer.flush()?;
        Ok(writer)
    }

    /// `<run_dir>/tb/<run_id>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The events file this writer appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&mut self, event: &[u8]) -> Result<(), InstrumentError> {
        self.record.clear();
        write_record(&mut self.record, event);
        self.out
            .write_all(&self.record)
            .map_err(|e| InstrumentError::io("write", &self.path, e))
    }
}

impl Instrument for TensorBoardWriter {
    fn scalars(&mut self, step: usize, scalars: &[(&str, f64)]) -> Result<(), InstrumentError> {
        if scalars.is_empty() {
            return Ok(());
        }
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        self.append(&scalars_event(unix_seconds(), step, scalars))
    }

    fn flush(&mut self) -> Result<(), InstrumentError> {
        self.out
            .flush()
            .map_err(|e| InstrumentError::io("flush", &self.path, e))
    }
}

/// A run id as one directory name (no separators, not `.` or `..`).
fn dir_name(run_id: &str) -> String {
    let name: String = run_id
        .chars()
        .map(|c| {
            if matches!(c, '/' | '\\') || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    match name.as_str() {
        "" | "." | ".." => "run".into(),
        _ => name,
    }
}

/// The events files of `dir`, sorted by name.
fn events_files(dir: &Path) -> Result<Vec<PathBuf>, InstrumentError> {
    let entries = fs::read_dir(dir).map_err(|e| InstrumentError::io("list", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| InstrumentError::io("list", dir, e))?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && entry.file_name().to_string_lossy().contains("tfevents") {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Truncate the events file at `path` before its first record with `step > keep_through`, or
/// before a torn or corrupt record.
pub fn cut_events_file(path: &Path, keep_through: usize) -> Result<(), InstrumentError> {
    let bytes = fs::read(path).map_err(|e| InstrumentError::io("read", path, e))?;
    let keep = kept_records(&bytes, keep_through);
    if keep < bytes.len() {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| InstrumentError::io("open", path, e))?;
        file.set_len(keep as u64)
            .map_err(|e| InstrumentError::io("truncate", path, e))?;
    }
    Ok(())
}

/// Length of the prefix of an events file made of whole records whose event step is at most
/// `keep_through`.
fn kept_records(bytes: &[u8], keep_through: usize) -> usize {
    let limit = i64::try_from(keep_through).unwrap_or(i64::MAX);
    let mut end = 0;
    for (at, data) in read_records(bytes) {
        if event_step(data).is_none_or(|step| step > limit) {
            return at;
        }
        end = at + super::tfrecord::OVERHEAD + data.len();
    }
    end
}

/// Create `dir/name` (or `dir/name.1`, `.2`, … when a file of that name exists: a resume within
/// the same second).
fn create_unique(dir: &Path, name: &str) -> Result<(PathBuf, File), InstrumentError> {
    let mut n = 0;
    loop {
        let path = match n {
            0 => dir.join(name),
            n => dir.join(format!("{name}.{n}")),
        };
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(InstrumentError::io("create", &path, e)),
        }
    }
}

/// This machine's name as a file-name part (`localhost` if unknown).
fn hostname() -> String {
    let raw = system_hostname().unwrap_or_default();
    let name: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if name.is_empty() { "localhost".into() } else { name }
}

#[cfg(unix)]
fn system_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which gethostname writes at most len bytes of.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(not(unix))]
fn system_hostname() -> Option<String> {
    std::env::var("COMPUTERNAME").ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::proto::FILE_VERSION;

    /// The step of every event after the file-version record.
    fn events(path: &Path) -> Vec<i64> {
        let bytes = fs::read(path).expect("read");
        let records = read_records(&bytes);
        assert!(
            records[0]
                .1
                .windows(FILE_VERSION.len())
                .any(|w| w == FILE_VERSION.as_bytes()),
            "the first record carries the file version"
        );
        records[1..]
            .iter()
            .map(|(_, d)| event_step(d).expect("event"))
            .collect()
    }

    #[test]
    fn whole_records_byte_for_byte() {
        // The first record of a file written at wall time 1.5 s. The CRCs are TensorBoard's own
        // (`tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c` on the same bytes).
        let mut got = Vec::new();
        write_record(&mut got, &file_version_event(1.5));
        #[rustfmt::skip]
        let mut want = vec![
            0x18, 0, 0, 0, 0, 0, 0, 0,          // data length 24, u64 LE
            0xa3, 0x7f, 0x4b, 0x22,             // masked crc32c of those 8 bytes (0x224b7fa3)
            0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // Event.wall_time (field 1, fixed64) = 1.5
            0x1a, 0x0d,                         // Event.file_version (field 3), 13 bytes:
        ];
        want.extend_from_slice(b"brain.Event:2");
        want.extend_from_slice(&[0x2a, 0x28, 0x64, 0x6c]); // masked crc32c of the data (0x6c64282a)
        assert_eq!(got, want);

        // A scalar event: step 3, `train/loss` = 2.5.
        let mut got = Vec::new();
        write_record(&mut got, &scalars_event(1.5, 3, &[("train/loss", 2.5)]));
        #[rustfmt::skip]
        let mut want = vec![
            0x20, 0, 0, 0, 0, 0, 0, 0,          // data length 32
            0x29, 0xed, 0xa9, 0x50,             // masked crc32c of the length (0x50a9ed29)
            0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // wall_time 1.5
            0x10, 0x03,                         // step (field 2, varint) = 3
            0x2a, 0x13,                         // summary (field 5), 19 bytes:
            0x0a, 0x11,                         //   value (field 1), 17 bytes:
            0x0a, 0x0a,                         //     tag (field 1), 10 bytes:
        ];
        want.extend_from_slice(b"train/loss");
        want.extend_from_slice(&[0x15, 0, 0, 0x20, 0x40]); //     simple_value (field 2, fixed32) = 2.5f32
        want.extend_from_slice(&[0x12, 0xe1, 0xbd, 0xac]); // masked crc32c of the data (0xacbde112)
        assert_eq!(got, want);
    }

    #[test]
    fn file_name_layout_and_contents() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut tb = TensorBoardWriter::open(dir.path(), "train", None).expect("open");
        assert_eq!(tb.dir(), dir.path().join("tb").join("train"));
        let name = tb
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let rest = name.strip_prefix(FILE_PREFIX).expect("prefix");
        let (secs, host) = rest.split_once('.').expect("secs.host");
        assert_eq!(secs.len(), 10, "{name}");
        assert!(secs.parse::<u64>().is_ok() && !host.is_empty(), "{name}");
        tb.scalars(1, &[("train/loss", 5.0), ("train/lr", 1e-3)])
            .expect("scalars");
        tb.scalars(2, &[]).expect("nothing to write");
        tb.scalars(3, &[("train/loss", 4.0)]).expect("scalars");
        tb.flush().expect("flush");
        assert_eq!(events(tb.path()), [1, 3]);
    }

    #[test]
    fn resume_cuts_old_files_and_starts_a_new_one_fresh_removes_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = {
            let mut tb = TensorBoardWriter::open(dir.path(), "r", None).expect("open");
            for step in [10, 20, 30] {
                tb.scalars(step, &[("train/loss", 1.0)]).expect("scalars");
            }
            tb.flush().expect("flush");
            tb.path().to_path_buf()
        };
        // A torn record at the end, as a crash mid-write leaves.
        let mut bytes = fs::read(&first).expect("read");
        bytes.extend_from_slice(&[1, 2, 3]);
        fs::write(&first, &bytes).expect("write");

        let mut tb = TensorBoardWriter::open(dir.path(), "r", Some(20)).expect("resume");
        assert_ne!(tb.path(), first, "a resumed run writes a new file");
        assert_eq!(events(&first), [10, 20], "step 30 and the torn tail are cut");
        tb.scalars(30, &[("train/loss", 0.5)]).expect("scalars");
        tb.flush().expect("flush");
        assert_eq!(events(tb.path()), [30]);
        drop(tb);

        let tb = TensorBoardWriter::open(dir.path(), "r", None).expect("fresh");
        // why not `!first.exists()`: within the same second the new file may take its name.
        assert_eq!(events_files(tb.dir()).expect("list"), [tb.path().to_path_buf()]);
        assert!(events(tb.path()).is_empty(), "a fresh start keeps no old event");
    }

    #[test]
    fn an_unwritable_directory_names_the_path_and_what_to_do() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A file where the `tb` directory should be.
        fs::write(dir.path().join(TB_DIR), "not a directory").expect("write");
        let err = match TensorBoardWriter::open(dir.path(), "r", None) {
            Ok(_) => panic!("a file in the way must fail"),
            Err(e) => e,
        };
        let text = err.to_string();
        assert!(
            text.starts_with("cannot create the TensorBoard directory"),
            "{text}"
        );
        assert!(
            text.contains(&dir.path().join("tb").join("r").display().to_string()),
            "{text}"
        );
        let InstrumentError::Io { hint, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(hint.contains("defaults.logging.instrument"), "{hint}");
    }

    #[test]
    fn run_ids_become_one_directory_name() {
        assert_eq!(dir_name("train__s1"), "train__s1");
        assert_eq!(dir_name("a/b"), "a_b");
        assert_eq!(dir_name(".."), "run");
        assert!(!hostname().is_empty());
    }
}
