//! Records on disk, the ground floor that `data`, `train`, `upcycle`, `bench` and `experiment`
//! write through: atomic file replacement (temp, fsync, rename, fsync the directory), pretty JSON, file checksums,
//! the git revision of the working directory, and the exclusive lock on a run directory.
//!
//! Nothing here knows about models or manifests; everything above imports it downward.

mod atomic;
mod digest;
mod error;
mod git;
mod json;
mod lock;

pub use atomic::{commit, discard, sync_dir, temp_path, write_atomic};
pub use digest::sha256_file;
pub use error::RecordError;
pub use git::git_revision;
pub use json::write_json;
pub use lock::{DirLock, LOCK_FILE};
