//! CRC-32C (Castagnoli) and TFRecord's masked form of it.
//!
//! CRC-32C: reflected polynomial `0x82F63B78`, initial value `!0`, final xor `!0` (RFC 3720 §B.4;
//! `"123456789"` → `0xE3069283`). TFRecord stores `mask(crc) = rotr(crc, 15) + 0xa282ead8`
//! (wrapping), TensorFlow's `crc32c::Mask` (`tensorflow/core/lib/hash/crc32c.h`).
//!
//! why hand-written and not the `crc32c` crate: a byte-at-a-time table is twenty lines, and the
//! writer checksums a few hundred bytes per logged step, where hardware CRC buys nothing.

/// The 256-entry table of the reflected polynomial, built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let crc = bytes.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    });
    !crc
}

/// TFRecord's masked CRC-32C of `bytes`. why: TensorFlow masks stored CRCs because the CRC of
/// data that itself holds CRCs is weak.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    crc32c(bytes).rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        // RFC 3720 §B.4: 32 bytes of zeros, of ones, ascending.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    #[test]
    fn mask_rotates_and_adds() {
        // rotr(0xE3069283, 15) = 0x2507C60D; + 0xA282EAD8 = 0xC78AB0E5.
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
        // The CRC of nothing is 0, so its mask is the constant alone.
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
    }
}
