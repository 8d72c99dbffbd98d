//! Memory-mapped 1-D `.npy` token files (NumPy format v1, v2 and v3 headers).
//!
//! Layout: `\x93NUMPY`, major, minor, header length (u16 for v1, u32 for v2/v3), a Python dict
//! literal `{'descr': '<i4', 'fortran_order': False, 'shape': (N,), }` padded with spaces to a
//! 16/64-byte boundary, then the raw little-endian payload. Supported dtypes: int32 (`<i4`),
//! uint16 (`<u2`), int64 (`<i8`). The payload is mapped, never read whole.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::DataError;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element type of a token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDtype {
    U16,
    I32,
    I64,
}

impl TokenDtype {
    fn from_descr(descr: &str) -> Option<Self> {
        match descr {
            "<u2" => Some(Self::U16),
            "<i4" => Some(Self::I32),
            "<i8" => Some(Self::I64),
            _ => None,
        }
    }

    fn descr(self) -> &'static str {
        match self {
            Self::U16 => "<u2",
            Self::I32 => "<i4",
            Self::I64 => "<i8",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::I32 => 4,
            Self::I64 => 8,
        }
    }

    /// The narrowest dtype `prepare` writes for a vocabulary: uint16 up to 65,536 ids, else int32.
    pub fn for_vocab(vocab: usize) -> Self {
        if vocab <= 1 << 16 { Self::U16 } else { Self::I32 }
    }
}

/// A memory-mapped 1-D token array.
pub struct TokenFile {
    path: PathBuf,
    map: Mmap,
    dtype: TokenDtype,
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("dtype", &self.dtype)
            .field("len", &self.len)
            .finish()
    }
}

impl TokenFile {
    /// Map `path` and parse its header; errors name the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DataError::Missing { path: path.clone() },
            _ => DataError::io(&path, e),
        })?;
        // why: mapping a directory fails with ENODEV, which reads "No such device".
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(DataError::BadNpy {
                path,
                reason: "it is a directory, not a .npy file".into(),
            });
        }
        // SAFETY: the map is read-only; a token file changed underneath a run is outside our contract
        // (prepare writes a new file and renames it into place, so it never mutates a mapped file).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(&path, e))?;
        let bad = |reason: String| DataError::BadNpy {
            path: path.clone(),
            reason,
        };
        let header = parse_header(&map).map_err(bad)?;
        let payload = map.len() - header.offset;
        let needed = header.len.saturating_mul(header.dtype.size());
        if payload < needed {
            return Err(DataError::BadNpy {
                path,
                reason: format!(
                    "the header promises {} elements ({needed} bytes) but {payload} follow",
                    header.len
                ),
            });
        }
        Ok(Self {
            path,
            map,
            dtype: header.dtype,
            offset: header.offset,
            len: header.len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dtype(&self) -> TokenDtype {
        self.dtype
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Token `i` as stored (no range check on the value).
    fn raw(&self, i: usize) -> i64 {
        let size = self.dtype.size();
        let at = self.offset + i * size;
        let b = &self.map[at..at + size];
        match self.dtype {
            TokenDtype::U16 => i64::from(u16::from_le_bytes([b[0], b[1]])),
            TokenDtype::I32 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            TokenDtype::I64 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        }
    }

    /// Tokens in `range` as u32 ids. Errors when the range leaves the file or an id is negative or
    /// does not fit u32 (run [`TokenFile::validate`] once to check against a vocabulary).
    pub fn get(&self, range: Range<usize>) -> Result<Vec<u32>, DataError> {
        if range.start > range.end || range.end > self.len {
            return Err(DataError::BadNpy {
                path: self.path.clone(),
                reason: format!("range {range:?} is outside its {} tokens", self.len),
            });
        }
        range
            .map(|i| {
                let v = self.raw(i);
                u32::try_from(v).map_err(|_| DataError::IdOutOfRange {
                    path: self.path.clone(),
                    index: i,
                    value: v,
                    vocab: u32::MAX as usize,
                })
            })
            .collect()
    }

    /// Check every id is in `0..vocab`; the error names the first offending index and value.
    pub fn validate(&self, vocab: usize) -> Result<(), DataError> {
        let vocab_i = i64::try_from(vocab).unwrap_or(i64::MAX);
        match (0..self.len).find(|&i| !(0..vocab_i).contains(&self.raw(i))) {
            Some(index) => Err(DataError::IdOutOfRange {
                path: self.path.clone(),
                index,
                value: self.raw(index),
                vocab,
            }),
            None => Ok(()),
        }
    }
}

struct Header {
    dtype: TokenDtype,
    len: usize,
    offset: usize,
}

fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("it does not start with the NumPy magic `\\x93NUMPY`".into());
    }
    let major = bytes[6];
    let (len_bytes, start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(format!("unsupported format version {major}.{}", bytes[7])),
    };
    let end = start + len_bytes;
    let text = bytes.get(start..end).ok_or("the header is truncated")?;
    let text = std::str::from_utf8(text).map_err(|_| "the header is not text".to_string())?;
    let descr = dict_value(text, "descr").ok_or("the header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype = match TokenDtype::from_descr(descr) {
        Some(d) => d,
        None if descr.starts_with('>') => return Err(format!("big-endian dtype `{descr}` is not supported")),
        None => {
            return Err(format!(
                "dtype `{descr}` is not a token dtype (int32 `<i4`, uint16 `<u2`, int64 `<i8`)"
            ));
        }
    };
    let shape = dict_value(text, "shape").ok_or("the header has no 'shape'")?;
    let dims: Vec<&str> = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let [n] = dims.as_slice() else {
        return Err(format!("expected a 1-D array, found shape {shape}"));
    };
    let len = n.parse::<usize>().map_err(|_| format!("bad shape {shape}"))?;
    Ok(Header {
        dtype,
        len,
        offset: end,
    })
}

/// The raw text of `'key': value` in a Python dict literal (value up to the next top-level comma).
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text
        .find(&format!("'{key}'"))
        .or_else(|| text.find(&format!("\"{key}\"")))?;
    let rest = text[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// Total bytes of the v1 header [`NpyWriter`] writes (a multiple of 64, room for any length).
const WRITER_HEADER_LEN: usize = 128;

/// Streams token ids into a v1 `.npy`: a fixed-size header is written first and rewritten with
/// the final length by [`NpyWriter::finish`], so a corpus never has to fit in memory.
pub struct NpyWriter<W: Write + Seek> {
    out: BufWriter<W>,
    dtype: TokenDtype,
    count: u64,
}

impl<W: Write + Seek> NpyWriter<W> {
    pub fn new(out: W, dtype: TokenDtype) -> std::io::Result<Self> {
        let mut out = BufWriter::new(out);
        out.write_all(&header_bytes(dtype, 0))?;
        Ok(Self { out, dtype, count: 0 })
    }

    /// Append ids; an id that does not fit the dtype is an `InvalidData` error.
    pub fn push(&mut self, ids: &[u32]) -> std::io::Result<()> {
        let too_big = |id: u32| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("id {id} does not fit {:?}", self.dtype),
            )
        };
        for &id in ids {
            match self.dtype {
                TokenDtype::U16 => self
                    .out
                    .write_all(&u16::try_from(id).map_err(|_| too_big(id))?.to_le_bytes())?,
                TokenDtype::I32 => self
                    .out
                    .write_all(&i32::try_from(id).map_err(|_| too_big(id))?.to_le_bytes())?,
                TokenDtype::I64 => self.out.write_all(&i64::from(id).to_le_bytes())?,
            }
        }
        self.count += ids.len() as u64;
        Ok(())
    }

    /// Ids written so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Write the final header and hand back the writer.
    pub fn finish(self) -> std::io::Result<W> {
        let header = header_bytes(self.dtype, self.count);
        let mut out = self.out.into_inner().map_err(|e| e.into_error())?;
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&header)?;
        out.seek(SeekFrom::End(0))?;
        Ok(out)
    }
}

fn header_bytes(dtype: TokenDtype, len: u64) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({len},), }}",
        dtype.descr()
    );
    let text_len = WRITER_HEADER_LEN - MAGIC.len() - 4;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(text_len as u16).to_le_bytes());
    out.extend_from_slice(format!("{dict:<width$}\n", width = text_len - 1).as_bytes());
    debug_assert_eq!(out.len(), WRITER_HEADER_LEN);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_named_as_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = TokenFile::open(dir.path()).expect_err("a directory");
        let msg = err.to_string();
        assert!(msg.contains("is a directory"), "{msg}");
        assert!(err.is_usage(), "{msg}");
    }

    #[test]
    fn parses_numpy_style_headers() {
        let h = "{'descr': '<i8', 'fortran_order': False, 'shape': (12345,), }";
        assert_eq!(dict_value(h, "descr"), Some("'<i8'"));
        assert_eq!(dict_value(h, "shape"), Some("(12345,)"));
        assert_eq!(dict_value(h, "fortran_order"), Some("False"));
    }

    #[test]
    fn streamed_file_reads_back() {
        let mut w = NpyWriter::new(std::io::Cursor::new(Vec::new()), TokenDtype::U16).expect("writer");
        w.push(&[1, 2, 3]).expect("push");
        w.push(&[65535]).expect("push");
        assert!(w.push(&[65536]).is_err(), "does not fit u16");
        let bytes = w.finish().expect("finish").into_inner();
        let h = parse_header(&bytes).expect("header");
        assert_eq!(
            (h.len, h.offset, h.dtype),
            (4, WRITER_HEADER_LEN, TokenDtype::U16)
        );
        assert_eq!(&bytes[h.offset..], &[1, 0, 2, 0, 3, 0, 255, 255]);
    }

    #[test]
    fn rejects_two_dimensional_arrays() {
        let dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (3, 4), }\n";
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        bytes.extend_from_slice(dict.as_bytes());
        let err = parse_header(&bytes).err().expect("2-D must be rejected");
        assert!(err.contains("1-D"), "{err}");
    }
}
