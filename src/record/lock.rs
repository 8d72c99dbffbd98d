//! The exclusive lock on a run directory: `<dir>/.lock`, held with `flock(2)` and holding the
//! holder's pid. A second process that asks for it gets [`RecordError::Locked`] naming that pid.
//!
//! The kernel drops an flock when its process ends, however it ends (`kill -9` included), so a
//! lock never outlives its holder and a stale `.lock` file is harmless. Within one process the
//! lock is shared: the runner holds it around the trainer, which asks for it again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::RecordError;

/// Name of the lock file inside a locked directory.
pub const LOCK_FILE: &str = ".lock";

/// Held while alive; dropping the last handle of a process releases the lock.
#[derive(Debug, Clone)]
pub struct DirLock {
    dir: PathBuf,
    _file: Arc<File>,
}

/// The locks this process holds, by canonical directory.
static HELD: Mutex<Option<HashMap<PathBuf, Weak<File>>>> = Mutex::new(None);

impl DirLock {
    /// Create `dir` if needed and lock it, or fail at once with the holder's pid.
    pub fn acquire(dir: &Path) -> Result<Self, RecordError> {
        std::fs::create_dir_all(dir).map_err(|e| RecordError::io(dir, e))?;
        let key = dir.canonicalize().map_err(|e| RecordError::io(dir, e))?;
        let mut held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let held = held.get_or_insert_with(HashMap::new);
        if let Some(file) = held.get(&key).and_then(Weak::upgrade) {
            return Ok(Self {
                dir: dir.to_path_buf(),
                _file: file,
            });
        }
        let path = dir.join(LOCK_FILE);
        // why: no truncation before the lock is ours, or the holder's pid would be erased.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| RecordError::io(&path, e))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(RecordError::Locked {
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            return Err(RecordError::io(&path, err));
        }
        let write_pid = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            writeln!(f, "{}", std::process::id())?;
            f.flush()
        };
        write_pid(&mut file).map_err(|e| RecordError::io(&path, e))?;
        let file = Arc::new(file);
        held.retain(|_, w| w.strong_count() > 0);
        held.insert(key, Arc::downgrade(&file));
        Ok(Self {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    const HOLDER_ENV: &str = "CARAMBA_TEST_LOCK_HOLDER";

    /// Not a test on its own: the child process of the test below, holding the lock until its
    /// stdin closes.
    #[test]
    fn lock_holder_child() {
        let Some(dir) = std::env::var_os(HOLDER_ENV) else {
            return;
        };
        let _lock = DirLock::acquire(Path::new(&dir)).expect("child takes the lock");
        println!("locked");
        let _ = std::io::stdin().read_line(&mut String::new());
    }

    #[test]
    fn a_second_process_is_refused_with_the_holders_pid_until_the_holder_is_killed() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join(format!("run-{}", rand::random::<u32>()));
        let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "record::lock::tests::lock_holder_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLDER_ENV, &dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the holder");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        while !line.contains("locked") {
            line.clear();
            assert!(
                out.read_line(&mut line).expect("read") > 0,
                "the holder exited early"
            );
        }
        let err = DirLock::acquire(&dir).expect_err("held by the child");
        assert!(
            matches!(&err, RecordError::Locked { pid: Some(p), .. } if *p == child.id()),
            "{err}"
        );
        assert!(err.to_string().contains(&child.id().to_string()), "{err}");
        // why: SIGKILL, not a clean exit: the kernel must release the lock of a killed process.
        child.kill().expect("kill the holder");
        child.wait().expect("reap");
        let lock = DirLock::acquire(&dir).expect("free after the holder died");
        let again = DirLock::acquire(&dir).expect("shared within one process");
        assert_eq!(again.dir(), lock.dir());
        let pid = std::fs::read_to_string(dir.join(LOCK_FILE)).expect("lock file");
        assert_eq!(pid.trim(), std::process::id().to_string());
    }
}
