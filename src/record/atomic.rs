//! Atomic file replacement: write a hidden temporary file beside the target, fsync it, rename it
//! over the target, then fsync the directory so the rename itself survives a power loss. A reader
//! sees the old file or the complete new one, never half of one.
//!
//! [`write_atomic`] does all of it for bytes in memory; writers that stream (safetensors, `.npy`,
//! a file copy) write to [`temp_path`] themselves and call [`commit`], or [`discard`] on failure.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::RecordError;

/// The temporary beside `path`: `.<name>.tmp-<pid>` (hidden, and per process so two writers never
/// share one).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Write `bytes` to `path` atomically. The parent directory must exist. On failure the temporary
/// is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    let tmp = temp_path(path);
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })()
    .map_err(|e| RecordError::io(path, e));
    let result = written.and_then(|()| rename_and_sync(&tmp, path));
    if result.is_err() {
        discard(&tmp);
    }
    result
}

/// Make the finished temporary `tmp` (from [`temp_path`]) the file at `path`: fsync it, rename it
/// over `path`, fsync the directory. On failure `tmp` is removed.
pub fn commit(tmp: &Path, path: &Path) -> Result<(), RecordError> {
    let result = fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| RecordError::io(tmp, e))
        .and_then(|()| rename_and_sync(tmp, path));
    if result.is_err() {
        discard(tmp);
    }
    result
}

/// Remove a temporary (file or directory) that will not be committed; a missing one is fine.
pub fn discard(tmp: &Path) {
    // why: this runs on an error path; the original error is the one worth reporting.
    let _ = if tmp.is_dir() {
        fs::remove_dir_all(tmp)
    } else {
        fs::remove_file(tmp)
    };
}

/// fsync a directory, so that the entries created, renamed or removed in it are on disk.
pub fn sync_dir(dir: &Path) -> Result<(), RecordError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RecordError::io(dir, e))
}

fn rename_and_sync(tmp: &Path, path: &Path) -> Result<(), RecordError> {
    fs::rename(tmp, path).map_err(|e| RecordError::io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.txt");
        let (first, second): (u64, u64) = (rand::random(), rand::random());
        write_atomic(&path, &first.to_le_bytes()).expect("write");
        write_atomic(&path, &second.to_le_bytes()).expect("overwrite");
        assert_eq!(fs::read(&path).expect("read"), second.to_le_bytes());
        assert_eq!(names(dir.path()), vec!["a.txt"]);
        let missing = dir.path().join("no/such/dir/a.txt");
        let err = write_atomic(&missing, b"x").expect_err("no parent directory");
        assert!(
            matches!(&err, RecordError::Io { path, .. } if path == &missing),
            "{err}"
        );
    }

    #[test]
    fn a_failed_commit_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("weights.bin");
        fs::write(&path, b"old").expect("old");
        let tmp = temp_path(&path);
        fs::write(&tmp, b"new").expect("tmp");
        commit(&tmp, &path).expect("commit");
        assert_eq!(fs::read(&path).expect("read"), b"new");
        // A target that cannot be replaced (a non-empty directory) fails; the temporary goes.
        let blocked = dir.path().join("blocked");
        fs::create_dir_all(blocked.join("inside")).expect("dir");
        let tmp = temp_path(&blocked);
        fs::write(&tmp, b"x").expect("tmp");
        assert!(commit(&tmp, &blocked).is_err());
        assert!(!tmp.exists());
        assert_eq!(names(dir.path()), vec!["blocked", "weights.bin"]);
    }
}
