//! TFRecord framing, the container of TensorBoard event files.
//!
//! A record is
//! ```text
//! u64 little-endian   length of data
//! u32 little-endian   masked_crc32c(the 8 length bytes)
//! [u8; length]        data
//! u32 little-endian   masked_crc32c(data)
//! ```
//! (TensorFlow `core/lib/io/record_writer.cc`; the mask is in [`super::crc32c`]). Records follow
//! one another with nothing between them; a file is a sequence of them.

use super::crc32c::masked_crc32c;

/// Bytes a record adds around its data: length, its CRC, the data's CRC.
pub const OVERHEAD: usize = 8 + 4 + 4;

/// Append the record of `data` to `out`.
pub fn write_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// The whole records at the start of `bytes`, each as (byte offset of the record, its data).
/// Stops at the first record that is torn (the file ends inside it) or whose CRCs do not match:
/// what follows cannot be trusted to be framed where it seems.
pub fn read_records(bytes: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(data) = record_at(bytes, at) {
        out.push((at, data));
        at += OVERHEAD + data.len();
    }
    out
}

/// The data of the intact record at byte `at`, if there is one.
fn record_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let rest = bytes.get(at..)?;
    let len_bytes = rest.get(..8)?;
    let len_crc = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?);
    if masked_crc32c(len_bytes) != len_crc {
        return None;
    }
    let len = usize::try_from(u64::from_le_bytes(len_bytes.try_into().ok()?)).ok()?;
    let end = 12usize.checked_add(len)?;
    let data = rest.get(12..end)?;
    let data_crc = u32::from_le_bytes(rest.get(end..end.checked_add(4)?)?.try_into().ok()?);
    (masked_crc32c(data) == data_crc).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_or_corrupt_tail_is_not_read() {
        let mut bytes = Vec::new();
        write_record(&mut bytes, b"first");
        write_record(&mut bytes, b"");
        write_record(&mut bytes, b"third record");
        let whole = bytes.len();
        let read = read_records(&bytes);
        let datas: Vec<&[u8]> = read.iter().map(|(_, d)| *d).collect();
        assert_eq!(datas, [&b"first"[..], b"", b"third record"]);
        assert_eq!(read[1].0, OVERHEAD + 5);
        assert_eq!(read[2].0, 2 * OVERHEAD + 5);

        // Torn: the last record lacks its final CRC byte.
        assert_eq!(read_records(&bytes[..whole - 1]).len(), 2);
        // Corrupt: a flipped data byte in the second-to-last record stops the read there.
        let mut bad = bytes.clone();
        bad[12] ^= 1;
        assert!(read_records(&bad).is_empty());
    }

    #[test]
    fn framing_bytes() {
        let mut bytes = Vec::new();
        write_record(&mut bytes, b"123456789");
        assert_eq!(&bytes[..8], &9u64.to_le_bytes());
        assert_eq!(&bytes[8..12], &masked_crc32c(&9u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&bytes[12..21], b"123456789");
        // masked_crc32c("123456789") = 0xC78AB0E5 (see crc32c.rs), little-endian.
        assert_eq!(&bytes[21..], &[0xE5, 0xB0, 0x8A, 0xC7]);
    }
}
