//! Crafted frames for the raw-socket tests: Ethernet with VLAN tags, IPv4 with options and
//! fragment fields, IPv6 with extension headers, UDP and TCP. Each builder writes true
//! lengths; a test that wants a lying header patches the bytes it returns.

const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02]; // nobody's: the frames die after the hooks
const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// An Ethernet II frame between two MACs nobody owns (the frames die after the hooks).
pub fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_DST);
    f.extend_from_slice(&MAC_SRC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Inserts a VLAN tag (TPID, VID) right after the MAC addresses.
pub fn tag(frame: Vec<u8>, tpid: u16, vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet (RFC 791) with optional options and fragment fields.
pub fn ipv4(
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    options: &[u8],
    id: u16,
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = 5 + options.len() / 4;
    let total = ihl * 4 + payload.len();
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 packet (RFC 8200) whose payload starts with the given extension headers.
pub fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A UDP datagram (RFC 768) with its true length and no checksum.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    [sport, dport, len, 0]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .chain(payload.iter().copied())
        .collect()
}

/// A TCP segment (RFC 9293) without options, PSH|ACK.
pub fn tcp(sport: u16, dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // doff 5, PSH|ACK
    t.extend_from_slice(payload);
    t
}

/// Cuts `l4` into pieces of `chunk` bytes (a multiple of 8) and makes a frame of each with
/// `frame(offset, more_fragments, piece)`.
fn split(l4: &[u8], chunk: usize, frame: impl Fn(usize, bool, &[u8]) -> Vec<u8>) -> Vec<Vec<u8>> {
    l4.chunks(chunk)
        .enumerate()
        .map(|(i, piece)| {
            let off = i * chunk;
            frame(off, off + piece.len() < l4.len(), piece)
        })
        .collect()
}

/// Splits an IPv4 UDP datagram (UDP header + payload) into fragments of `n` bytes.
pub fn ipv4_fragments(src: [u8; 4], dst: [u8; 4], id: u16, l4: &[u8], n: usize) -> Vec<Vec<u8>> {
    split(l4, n, |off, more, piece| {
        let mf = if more { 0x2000 } else { 0 };
        eth(
            0x0800,
            &ipv4(17, src, dst, &[], id, mf | (off / 8) as u16, piece),
        )
    })
}

/// Splits an IPv6 UDP datagram into fragments of `n` bytes with a Fragment header
/// (RFC 8200 §4.5).
pub fn ipv6_fragments(src: [u8; 16], dst: [u8; 16], id: u32, l4: &[u8], n: usize) -> Vec<Vec<u8>> {
    split(l4, n, |off, more, piece| {
        let mut p = vec![17, 0];
        p.extend_from_slice(&(((off / 8) as u16) << 3 | u16::from(more)).to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(piece);
        eth(0x86dd, &ipv6(44, src, dst, &p))
    })
}
