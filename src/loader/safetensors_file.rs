//! One safetensors file, read into memory when small and memory-mapped when large, that never
//! lets a truncated file crash the process.
//!
//! why: a memory map of a file that shrinks afterwards (a download rewritten, a disk filling up)
//! turns the next read of a vanished page into SIGBUS, which kills the process with no message.
//! Files up to [`READ_LIMIT`] are therefore read (the tensors are copied out anyway); larger
//! ones are mapped, their header's offsets are checked against the file's length at open (by
//! safetensors), and the length is checked again before each tensor is copied out, which turns
//! a truncation between loads into an error naming the file.

use std::path::{Path, PathBuf};

use candle_core::Result;
use candle_core::safetensors::{BufferedSafetensors, MmapedSafetensors};
use safetensors::tensor::TensorView;

use super::LoadError;

/// Files up to this many bytes are read rather than mapped: 2 GiB.
pub const READ_LIMIT: u64 = 2 << 30;

enum Storage {
    Read(BufferedSafetensors),
    Mapped { st: MmapedSafetensors, len: u64 },
}

/// An opened safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    storage: Storage,
}

impl SafetensorsFile {
    /// Open `path`, checking its header against its length.
    pub fn open(path: &Path) -> std::result::Result<Self, LoadError> {
        let corrupt = |message: String| LoadError::Corrupt {
            file: path.into(),
            format: "safetensors",
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| LoadError::io(path, e))?;
        if meta.is_dir() {
            return Err(corrupt("it is a directory, not a file".into()));
        }
        let len = meta.len();
        let storage = if len <= READ_LIMIT {
            let bytes = std::fs::read(path).map_err(|e| LoadError::io(path, e))?;
            Storage::Read(BufferedSafetensors::new(bytes).map_err(|e| corrupt(e.to_string()))?)
        } else {
            // SAFETY: mapped read-only; caramba never writes a file it is loading, and a file that
            // someone else shrinks is caught by the length check in `get` (see the module docs).
            let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| corrupt(e.to_string()))?;
            Storage::Mapped { st, len }
        };
        Ok(Self {
            path: path.into(),
            storage,
        })
    }

    /// Every tensor's name and view.
    pub fn tensors(&self) -> Vec<(String, TensorView<'_>)> {
        match &self.storage {
            Storage::Read(st) => st.tensors(),
            Storage::Mapped { st, .. } => st.tensors(),
        }
    }

    /// The view of tensor `name` (for a mapped file, after checking it has not shrunk).
    pub fn get(&self, name: &str) -> Result<TensorView<'_>> {
        match &self.storage {
            Storage::Read(st) => st.get(name),
            Storage::Mapped { st, len } => {
                let now = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
                if now < *len {
                    candle_core::bail!(
                        "{}: the file shrank from {len} to {now} bytes while it was being loaded \
                         (truncated or rewritten by another program)",
                        self.path.display()
                    );
                }
                st.get(name)
            }
        }
    }
}
