//! SHA-256 of a file, streamed: the checksum a checkpoint records for each of its files and checks
//! before loading them. The hex digest is what `sha256sum` prints, so a file can be checked by hand.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::RecordError;

/// Lowercase hex SHA-256 of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<String, RecordError> {
    let mut file = std::fs::File::open(path).map_err(|e| RecordError::read(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| RecordError::read(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_known_digest_and_sees_one_flipped_bit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").expect("write");
        assert_eq!(
            sha256_file(&path).expect("hash"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut bytes: Vec<u8> = (0..3000).map(|_| rand::random()).collect();
        std::fs::write(&path, &bytes).expect("write");
        let before = sha256_file(&path).expect("hash");
        let i = rand::random_range(0..bytes.len());
        bytes[i] ^= 1 << rand::random_range(0..8);
        std::fs::write(&path, &bytes).expect("write");
        assert_ne!(sha256_file(&path).expect("hash"), before);
    }
}
