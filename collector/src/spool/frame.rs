//! Record framing of spool segment files: `[len u32][crc32c u32][seq u64][payload]`, all
//! integers little-endian, the CRC-32C (Castagnoli polynomial, as in RFC 3720 §12.1 and its
//! Appendix B.4 test vectors) taken over `seq ‖ payload` so a damaged sequence number is
//! caught as surely as a damaged payload. Pure functions over bytes; the I/O is elsewhere.
#![deny(clippy::indexing_slicing, clippy::panic)]

/// Bytes before the payload: length, checksum, sequence.
pub const HEADER_LEN: usize = 16;

/// A decoded frame header (not yet verified against its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// CRC-32C of `seq ‖ payload`.
    pub crc: u32,
    /// Sequence number.
    pub seq: u64,
}

impl Header {
    /// Decodes the fixed-size header.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        let [l0, l1, l2, l3, c0, c1, c2, c3, s0, s1, s2, s3, s4, s5, s6, s7] = *b;
        Self {
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            crc: u32::from_le_bytes([c0, c1, c2, c3]),
            seq: u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
        }
    }

    /// Whole frame length (header + payload) in bytes.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }

    /// Whether `payload` is what this header was written with.
    pub fn verifies(&self, payload: &[u8]) -> bool {
        checksum(self.seq, payload) == self.crc
    }
}

/// CRC-32C of `seq (LE) ‖ payload`.
pub fn checksum(seq: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), payload)
}

/// Appends the frame of `payload` with sequence `seq` to `out`. The caller has checked that
/// the payload length fits the configured record limit (and therefore a `u32`).
pub fn encode(seq: u64, payload: &[u8], len: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_crc32c_of_seq_then_payload() {
        // RFC 3720 Appendix B.4: CRC-32C of 32 bytes of zeros is 0x8A9136AA (sent as the
        // bytes aa 36 91 8a). Eight zero bytes of sequence plus 24 zero payload bytes are
        // exactly that input.
        assert_eq!(checksum(0, &[0u8; 24]), 0x8A91_36AA);
        // RFC 3720 B.4: 32 bytes of 0xFF give 0x62A8AB43.
        assert_eq!(checksum(u64::MAX, &[0xFFu8; 24]), 0x62A8_AB43);
    }

    #[test]
    fn layout_is_len_crc_seq_payload_little_endian() {
        let mut out = Vec::new();
        encode(0x0102_0304_0506_0708, b"abc", 3, &mut out);
        assert_eq!(out.len(), HEADER_LEN + 3);
        assert_eq!(&out[0..4], &[3, 0, 0, 0]);
        assert_eq!(&out[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&out[16..], b"abc");
        let h = Header::parse(out[..HEADER_LEN].try_into().unwrap());
        assert_eq!(h.len, 3);
        assert_eq!(h.seq, 0x0102_0304_0506_0708);
        assert!(h.verifies(b"abc"));
        assert!(!h.verifies(b"abd"));
        assert_eq!(h.frame_len(), 19);
    }
}
