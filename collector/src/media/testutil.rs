//! Test helpers: UDP payloads out of the shared corpus captures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

/// One UDP datagram out of a capture: frame number (1-based, as tshark counts), capture time
/// in ns, UDP payload.
pub struct Datagram {
    pub frame: usize,
    pub time_ns: u64,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
}

/// A minimal classic-pcap reader (little-endian, µs timestamps) with an Ethernet / Linux
/// cooked (SLL) → IPv4 → UDP walk: just enough to pull RTP and RTCP payloads out of
/// the corpus. Later IP fragments are skipped.
pub fn udp_datagrams(name: &str) -> Vec<Datagram> {
    let path = format!("{}/../testdata/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        &data[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian µs pcap"
    );
    let le32 = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    let linktype = le32(20);
    let mut out = Vec::new();
    let mut off = 24;
    let mut frame = 0;
    while off + 16 <= data.len() {
        frame += 1;
        let ts = u64::from(le32(off)) * 1_000_000_000 + u64::from(le32(off + 4)) * 1000;
        let incl = le32(off + 8) as usize;
        let pkt = &data[off + 16..off + 16 + incl];
        off += 16 + incl;
        let (ethertype, l3) = match linktype {
            1 => (u16::from_be_bytes([pkt[12], pkt[13]]), 14),
            113 => (u16::from_be_bytes([pkt[14], pkt[15]]), 16),
            other => panic!("link type {other}"),
        };
        let frag_offset = u16::from_be_bytes([pkt[l3 + 6], pkt[l3 + 7]]) & 0x1fff;
        if ethertype != 0x0800 || pkt[l3 + 9] != 17 || frag_offset != 0 {
            continue;
        }
        let ihl = usize::from(pkt[l3] & 0x0f) * 4;
        let udp = l3 + ihl;
        let udp_len = usize::from(u16::from_be_bytes([pkt[udp + 4], pkt[udp + 5]]));
        out.push(Datagram {
            frame,
            time_ns: ts,
            sport: u16::from_be_bytes([pkt[udp], pkt[udp + 1]]),
            dport: u16::from_be_bytes([pkt[udp + 2], pkt[udp + 3]]),
            payload: pkt[udp + 8..udp + udp_len].to_vec(),
        });
    }
    out
}
