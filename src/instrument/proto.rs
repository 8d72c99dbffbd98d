//! The TensorBoard `Event` protobuf, encoded by hand (scalars only).
//!
//! ```text
//! Event          (tensorboard/compat/proto/event.proto)
//!   wall_time     1  double   key 0x09, 8 bytes little-endian
//!   step          2  int64    key 0x10, varint
//!   file_version  3  string   key 0x1a, varint length + UTF-8   ("brain.Event:2", first record only)
//!   summary       5  Summary  key 0x2a, varint length + message
//! Summary        (summary.proto)
//!   value         1  repeated Value   key 0x0a, varint length + message
//! Summary.Value
//!   tag           1  string   key 0x0a, varint length + UTF-8
//!   simple_value  2  float    key 0x15, 4 bytes little-endian
//! ```
//! A key is the varint `field << 3 | wire type` (0 varint, 1 fixed64, 2 length-delimited,
//! 5 fixed32). Varints are little-endian base-128, high bit set on every byte but the last.
//! why by hand: three messages with six fields do not need a protobuf crate (and
//! tensorboard-rs pulls a `protobuf` with a security advisory).

/// The `file_version` of the first record of an events file: TensorBoard reads the rest as
/// `Event` protos only after it.
pub const FILE_VERSION: &str = "brain.Event:2";

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// Append `v` as a base-128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The first event of a file: `{wall_time, file_version: "brain.Event:2"}`.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    put_key(&mut out, 1, FIXED64);
    out.extend_from_slice(&wall_time.to_le_bytes());
    put_bytes(&mut out, 3, FILE_VERSION.as_bytes());
    out
}

/// An event holding one summary with a `simple_value` per scalar (stored as f32, as TensorBoard
/// does).
pub fn scalars_event(wall_time: f64, step: i64, scalars: &[(&str, f64)]) -> Vec<u8> {
    let mut summary = Vec::new();
    let mut value = Vec::new();
    for (tag, v) in scalars {
        value.clear();
        put_bytes(&mut value, 1, tag.as_bytes());
        put_key(&mut value, 2, FIXED32);
        value.extend_from_slice(&(*v as f32).to_le_bytes());
        put_bytes(&mut summary, 1, &value);
    }
    let mut out = Vec::with_capacity(summary.len() + 24);
    put_key(&mut out, 1, FIXED64);
    out.extend_from_slice(&wall_time.to_le_bytes());
    put_key(&mut out, 2, VARINT);
    // why: int64 varints encode negative values as their 64-bit two's complement.
    put_varint(&mut out, step as u64);
    put_bytes(&mut out, 5, &summary);
    out
}

/// Read a varint at `*at`, advancing it; `None` if the bytes end inside it or it is too long.
fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `step` of an encoded `Event` (0 when absent, as protobuf defaults it); `None` when the
/// bytes are not a well-formed message.
pub fn event_step(bytes: &[u8]) -> Option<i64> {
    let (mut at, mut step) = (0, 0i64);
    while at < bytes.len() {
        let key = get_varint(bytes, &mut at)?;
        match key & 7 {
            VARINT => {
                let v = get_varint(bytes, &mut at)?;
                if key >> 3 == 2 {
                    step = v as i64;
                }
            }
            FIXED64 => at = at.checked_add(8)?,
            LEN => {
                let len = usize::try_from(get_varint(bytes, &mut at)?).ok()?;
                at = at.checked_add(len)?;
            }
            FIXED32 => at = at.checked_add(4)?,
            _ => return None,
        }
    }
    (at == bytes.len()).then_some(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    #[test]
    fn varints() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(1), [0x01]);
        assert_eq!(varint(127), [0x7f]);
        // 300 = 0b10_0101100: low 7 bits 0x2c with the continuation bit, then 0b10.
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(
            varint(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let bytes = varint(v);
            let mut at = 0;
            assert_eq!(get_varint(&bytes, &mut at), Some(v));
            assert_eq!(at, bytes.len());
        }
    }

    #[test]
    fn file_version_event_bytes() {
        // 0x09 + 1.5f64 LE, 0x1a + length 13 + "brain.Event:2".
        let mut want = vec![0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x1a, 13];
        want.extend_from_slice(b"brain.Event:2");
        assert_eq!(file_version_event(1.5), want);
        assert_eq!(event_step(&want), Some(0));
    }

    #[test]
    fn scalars_event_bytes() {
        let got = scalars_event(1.5, 300, &[("a", 0.5), ("bc", -2.0)]);
        #[rustfmt::skip]
        let want = [
            0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // wall_time 1.5
            0x10, 0xac, 0x02,                  // step 300
            0x2a, 21,                          // summary, 21 bytes:
            0x0a, 8,                           //   value, 8 bytes:
            0x0a, 1, b'a',                     //     tag "a"
            0x15, 0, 0, 0, 0x3f,               //     simple_value 0.5f32
            0x0a, 9,                           //   value, 9 bytes:
            0x0a, 2, b'b', b'c',               //     tag "bc"
            0x15, 0, 0, 0, 0xc0,               //     simple_value -2.0f32
        ];
        assert_eq!(got, want);
        assert_eq!(event_step(&got), Some(300));
        assert_eq!(
            event_step(&got[..got.len() - 1]),
            None,
            "a cut message is not well formed"
        );
    }
}
