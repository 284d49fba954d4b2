//! Bounded L2..L4 parser (IEEE 802.3 / 802.1Q / 802.1ad, RFC 791 IPv4 with options,
//! RFC 8200 IPv6 with extension headers, RFC 768 UDP, RFC 9293 TCP), shared by the XDP and
//! TC programs and by offline replay.
//!
//! It works on a `[start, end)` address range, as the kernel hands it over (`data` /
//! `data_end`); every read is checked against `end` first, the way the verifier demands.
//! On the host, [`parse_slice`] runs it over a byte slice.

/// Most VLAN tags walked (802.1ad outer + 802.1Q inner).
pub const MAX_VLAN_TAGS: usize = 2;
/// Most IPv6 extension headers walked before giving up.
pub const MAX_IPV6_EXT: usize = 6;

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// Why a packet could not be parsed down to its L4 payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A header runs past the end of the data.
    Truncated,
    /// Not IPv4 or IPv6 at L3.
    NotIp,
    /// More VLAN tags or IPv6 extension headers than the parser walks.
    Unsupported,
    /// A header field is impossible (IHL < 5, TCP data offset < 5, UDP length < 8).
    Malformed,
}

/// Fragment state of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fragment {
    /// Not fragmented.
    #[default]
    None,
    /// The first fragment (offset 0, more fragments follow): carries the L4 header.
    First,
    /// A later fragment: no L4 header.
    Later,
}

/// Where the layers of a packet start and what its addresses are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Parsed {
    /// Offset of the IP header.
    pub l3_off: u16,
    /// Offset of the UDP/TCP header (0 for a later fragment or another protocol).
    pub l4_off: u16,
    /// Offset of the L4 payload (0 when there is none).
    pub l7_off: u16,
    /// 4 or 6.
    pub ip_version: u8,
    /// Upper-layer protocol (after the IPv6 extension headers).
    pub proto: u8,
    /// Source address; IPv4 mapped into IPv6.
    pub src: [u8; 16],
    /// Destination address; IPv4 mapped into IPv6.
    pub dst: [u8; 16],
    /// Source port (host order; 0 without an L4 header).
    pub sport: u16,
    /// Destination port (host order; 0 without an L4 header).
    pub dport: u16,
    /// Bytes of L4 payload according to the headers, clamped to the data present.
    pub payload_len: u16,
    /// IPv4 identification or IPv6 fragment identification (fragments only).
    pub frag_id: u32,
    /// Fragment state.
    pub fragment: Fragment,
    /// VLAN tags walked.
    pub vlan_tags: u8,
    /// The IP header's length runs past `pkt_len`, or the UDP length past the IP payload
    /// (not for fragments, whose UDP length covers the whole datagram). A live packet
    /// with this is a lie; in a capture cut at its snap length it is the cut.
    pub bad_length: bool,
}

/// Reads a `T` at `start + off`, checking it ends at or before `end`.
///
/// # Safety
/// `[start, end)` must be readable memory (the packet the kernel handed over, or a slice).
#[inline(always)]
unsafe fn read<T: Copy>(start: usize, end: usize, off: usize) -> Result<T, ParseError> {
    let p = start + off;
    if p + core::mem::size_of::<T>() > end {
        return Err(ParseError::Truncated);
    }
    // SAFETY: the range was checked against `end` just above; the caller vouches for
    // `[start, end)`. Packet data has no alignment guarantee, hence `read_unaligned`.
    Ok(unsafe { core::ptr::read_unaligned(p as *const T) })
}

/// Reads a 16-byte address at `start + off` as two 8-byte loads: a `[u8; 16]` read is a
/// `memmove` call in BPF, a byte loop.
///
/// # Safety
/// As [`read`].
#[inline(always)]
unsafe fn read_addr16(start: usize, end: usize, off: usize) -> Result<[u8; 16], ParseError> {
    // SAFETY (both reads): forwarded from this function's contract.
    let words: [u64; 2] = unsafe { [read(start, end, off)?, read(start, end, off + 8)?] };
    // SAFETY: same size, every bit pattern valid for both; the words hold the bytes in
    // memory order, so the array is the bytes as they were.
    Ok(unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) })
}

#[inline(always)]
fn mapped_v4(a: [u8; 4]) -> [u8; 16] {
    // Built from two 8-byte words: the byte-array literal `[0, .., 0xff, 0xff, a, b, c, d]`
    // compiles to a `memset` call in BPF, a byte loop of tens of instructions per packet.
    let lo = 0xffff_0000u64 | (u64::from(u32::from_le_bytes(a)) << 32);
    let words = [0u64, lo.to_le()];
    // SAFETY: `[u64; 2]` and `[u8; 16]` have the same size and every bit pattern is valid
    // for both; `to_le` makes the byte order the same on any host.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) }
}

/// Parses the packet in `[start, end)` from the Ethernet header down to the L4 payload.
/// `pkt_len` is the whole packet's length (it may exceed `end - start` when only the
/// linear part is mapped); it clamps the payload length the headers claim.
///
/// # Safety
/// `[start, end)` must be readable memory.
#[inline(always)]
pub unsafe fn parse(start: usize, end: usize, pkt_len: usize) -> Result<Parsed, ParseError> {
    let mut out = Parsed::default();
    // SAFETY: forwarded from this function's contract.
    unsafe { parse_into(start, end, pkt_len, &mut out)? };
    Ok(out)
}

/// [`parse`] writing into `out` (in the kernel a per-CPU map slot: the eBPF stack is small).
/// `out` is fully overwritten on success; on error its contents are unspecified.
///
/// # Safety
/// `[start, end)` must be readable memory.
#[inline(always)]
pub unsafe fn parse_into(
    start: usize,
    end: usize,
    pkt_len: usize,
    out: &mut Parsed,
) -> Result<(), ParseError> {
    // Field by field, not `*out = Parsed::default()`: that is a `memset` call in BPF (a
    // byte loop over the whole struct on every packet). Volatile, because LLVM merges plain
    // adjacent zero stores back into a `memset`. The fields not set here are set on every
    // path that returns `Ok` below.
    // SAFETY: each pointer is a field of `out`, a valid exclusive reference.
    unsafe {
        core::ptr::write_volatile(&mut out.l4_off, 0);
        core::ptr::write_volatile(&mut out.l7_off, 0);
        core::ptr::write_volatile(&mut out.sport, 0);
        core::ptr::write_volatile(&mut out.dport, 0);
        core::ptr::write_volatile(&mut out.payload_len, 0);
        core::ptr::write_volatile(&mut out.frag_id, 0);
        core::ptr::write_volatile(&mut out.fragment, Fragment::None);
    }
    // SAFETY (all `read` calls below): forwarded from this function's contract.
    let mut proto: u16 = u16::from_be(unsafe { read::<u16>(start, end, 12)? });
    let mut off = ETH_HLEN;
    let mut tags = 0u8;
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        proto = u16::from_be(unsafe { read::<u16>(start, end, off + 2)? });
        off += 4;
        tags += 1;
    }
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        return Err(ParseError::Unsupported);
    }
    out.vlan_tags = tags;
    out.l3_off = off as u16;
    let l4_proto;
    let l4_off;
    let l4_end; // end of the IP payload according to the IP header
    match proto {
        ETH_P_IPV4 => {
            let vihl: u8 = unsafe { read(start, end, off)? };
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return Err(ParseError::Malformed);
            }
            let tot_len = usize::from(u16::from_be(unsafe { read::<u16>(start, end, off + 2)? }));
            let id = u16::from_be(unsafe { read::<u16>(start, end, off + 4)? });
            let frag = u16::from_be(unsafe { read::<u16>(start, end, off + 6)? });
            l4_proto = unsafe { read::<u8>(start, end, off + 9)? };
            out.src = mapped_v4(unsafe { read::<[u8; 4]>(start, end, off + 12)? });
            out.dst = mapped_v4(unsafe { read::<[u8; 4]>(start, end, off + 16)? });
            // The options must be present too. (Two-byte reads: the verifier learns no range
            // from the `ptr >= end` that LLVM makes of a one-byte check.)
            unsafe { read::<[u8; 2]>(start, end, off + ihl - 2)? };
            if tot_len < ihl {
                return Err(ParseError::Malformed);
            }
            out.ip_version = 4;
            let more = frag & 0x2000 != 0;
            let frag_off = frag & 0x1fff;
            if more || frag_off != 0 {
                out.frag_id = u32::from(id);
                out.fragment = if frag_off == 0 {
                    Fragment::First
                } else {
                    Fragment::Later
                };
            }
            l4_off = off + ihl;
            l4_end = off + tot_len;
        }
        ETH_P_IPV6 => {
            let vtc: u8 = unsafe { read(start, end, off)? };
            if vtc >> 4 != 6 {
                return Err(ParseError::Malformed);
            }
            let plen = usize::from(u16::from_be(unsafe { read::<u16>(start, end, off + 4)? }));
            let mut next: u8 = unsafe { read(start, end, off + 6)? };
            out.src = unsafe { read_addr16(start, end, off + 8)? };
            out.dst = unsafe { read_addr16(start, end, off + 24)? };
            out.ip_version = 6;
            let mut eoff = off + 40;
            let mut done = false;
            for _ in 0..MAX_IPV6_EXT {
                match next {
                    IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                        let [nh, len] = unsafe { read::<[u8; 2]>(start, end, eoff)? };
                        next = nh;
                        eoff += (usize::from(len) + 1) * 8;
                    }
                    IPPROTO_AH => {
                        let [nh, len] = unsafe { read::<[u8; 2]>(start, end, eoff)? };
                        next = nh;
                        eoff += (usize::from(len) + 2) * 4;
                    }
                    IPPROTO_FRAGMENT => {
                        let [nh, _] = unsafe { read::<[u8; 2]>(start, end, eoff)? };
                        let fo = u16::from_be(unsafe { read::<u16>(start, end, eoff + 2)? });
                        let id = u32::from_be(unsafe { read::<u32>(start, end, eoff + 4)? });
                        next = nh;
                        eoff += 8;
                        let frag_off = fo >> 3;
                        let more = fo & 1 != 0;
                        if more || frag_off != 0 {
                            out.frag_id = id;
                            out.fragment = if frag_off == 0 {
                                Fragment::First
                            } else {
                                Fragment::Later
                            };
                        }
                    }
                    _ => {
                        done = true;
                        break;
                    }
                }
            }
            if !done {
                return Err(ParseError::Unsupported);
            }
            l4_proto = next;
            l4_off = eoff;
            l4_end = off + 40 + plen;
        }
        _ => return Err(ParseError::NotIp),
    }
    out.proto = l4_proto;
    out.bad_length = l4_end > pkt_len;
    if out.fragment == Fragment::Later {
        return Ok(());
    }
    // Bytes of IP payload present: the header's claim, clamped to what was captured.
    let avail_end = if l4_end < pkt_len { l4_end } else { pkt_len };
    match l4_proto {
        IPPROTO_UDP => {
            let sport = u16::from_be(unsafe { read::<u16>(start, end, l4_off)? });
            let dport = u16::from_be(unsafe { read::<u16>(start, end, l4_off + 2)? });
            let ulen = usize::from(u16::from_be(unsafe {
                read::<u16>(start, end, l4_off + 4)?
            }));
            if ulen < 8 {
                return Err(ParseError::Malformed);
            }
            // The checksum too: the whole 8-byte header is present, so the payload offset
            // never points past the data.
            unsafe { read::<u16>(start, end, l4_off + 6)? };
            out.sport = sport;
            out.dport = dport;
            out.l4_off = l4_off as u16;
            out.l7_off = (l4_off + 8) as u16;
            // A first fragment's UDP length covers the whole datagram: use what is here.
            let claimed = l4_off + ulen;
            if out.fragment == Fragment::None && claimed > l4_end {
                out.bad_length = true;
            }
            let pend = if out.fragment == Fragment::None && claimed < avail_end {
                claimed
            } else {
                avail_end
            };
            out.payload_len = pend.saturating_sub(l4_off + 8) as u16;
        }
        IPPROTO_TCP => {
            let sport = u16::from_be(unsafe { read::<u16>(start, end, l4_off)? });
            let dport = u16::from_be(unsafe { read::<u16>(start, end, l4_off + 2)? });
            let [doff, _] = unsafe { read::<[u8; 2]>(start, end, l4_off + 12)? };
            let thl = usize::from(doff >> 4) * 4;
            if thl < 20 {
                return Err(ParseError::Malformed);
            }
            // The options too (two-byte read: see the IPv4 options above).
            unsafe { read::<[u8; 2]>(start, end, l4_off + thl - 2)? };
            out.sport = sport;
            out.dport = dport;
            out.l4_off = l4_off as u16;
            out.l7_off = (l4_off + thl) as u16;
            out.payload_len = avail_end.saturating_sub(l4_off + thl) as u16;
        }
        _ => {}
    }
    Ok(())
}

/// The ports of a plain UDP packet: untagged Ethernet, IPv4 without options, not a
/// fragment, every length consistent. For such a packet [`parse_into`] would succeed with
/// these ports, `proto` UDP, no fragment and no `bad_length`; for any other packet this
/// returns `None` and the caller runs the full parse.
///
/// It exists for the kernel's cheapest path: most packets concern no SIP port and no media
/// port, and deciding that from a few header loads (no writes, no per-CPU working memory)
/// costs a fraction of the full parse. `pkt_len` as for [`parse_into`].
///
/// # Safety
/// `[start, end)` must be readable memory.
#[inline(always)]
pub unsafe fn plain_udp4_ports(start: usize, end: usize, pkt_len: usize) -> Option<(u16, u16)> {
    // Ethernet (14) + IPv4 without options (20) + UDP (8): one bounds check for all loads.
    if start + ETH_HLEN + 28 > end {
        return None;
    }
    // SAFETY (all loads below): the 42 bytes were checked against `end` just above, and the
    // caller vouches for `[start, end)`; packet data has no alignment guarantee.
    let at = |off: usize| start + off;
    let ethertype = u16::from_be(unsafe { core::ptr::read_unaligned(at(12) as *const u16) });
    let vihl = unsafe { core::ptr::read_unaligned(at(14) as *const u8) };
    let proto = unsafe { core::ptr::read_unaligned(at(23) as *const u8) };
    if ethertype != ETH_P_IPV4 || vihl != 0x45 || proto != IPPROTO_UDP {
        return None;
    }
    let tot_len = usize::from(u16::from_be(unsafe {
        core::ptr::read_unaligned(at(16) as *const u16)
    }));
    let frag = u16::from_be(unsafe { core::ptr::read_unaligned(at(20) as *const u16) });
    let ulen = usize::from(u16::from_be(unsafe {
        core::ptr::read_unaligned(at(38) as *const u16)
    }));
    // More fragments or an offset; a total length under the header (malformed); the IP
    // packet past the frame or the UDP datagram past the IP packet (`bad_length`); a UDP
    // length under its header (malformed): the full parse decides those.
    let l4_end = ETH_HLEN + tot_len;
    if frag & 0x3fff != 0 || tot_len < 20 || l4_end > pkt_len || ulen < 8 || 34 + ulen > l4_end {
        return None;
    }
    let sport = u16::from_be(unsafe { core::ptr::read_unaligned(at(34) as *const u16) });
    let dport = u16::from_be(unsafe { core::ptr::read_unaligned(at(36) as *const u16) });
    Some((sport, dport))
}

/// Writes into `out` what [`parse_into`] writes for a packet [`plain_udp4_ports`] answered
/// for (the same range and length), from the fixed offsets of that layout instead of a
/// second walk through the headers. `false`, and nothing written, when the range is
/// shorter than the headers (the caller then runs the full parse).
///
/// # Safety
/// `[start, end)` must be readable memory holding a packet [`plain_udp4_ports`] answered for.
#[inline(always)]
pub unsafe fn plain_udp4_into(start: usize, end: usize, out: &mut Parsed) -> bool {
    // Checked again: the verifier knows the range of the registers at hand, not of a check
    // made earlier on another copy of the pointer.
    if start + ETH_HLEN + 28 > end {
        return false;
    }
    // SAFETY (all loads below): the 42 bytes were checked against `end` just above.
    let at = |off: usize| start + off;
    let be16 =
        |off: usize| u16::from_be(unsafe { core::ptr::read_unaligned(at(off) as *const u16) });
    let ulen = be16(38);
    out.l3_off = ETH_HLEN as u16;
    out.l4_off = (ETH_HLEN + 20) as u16;
    out.l7_off = (ETH_HLEN + 28) as u16;
    out.ip_version = 4;
    out.proto = IPPROTO_UDP;
    out.src = mapped_v4(unsafe { core::ptr::read_unaligned(at(26) as *const [u8; 4]) });
    out.dst = mapped_v4(unsafe { core::ptr::read_unaligned(at(30) as *const [u8; 4]) });
    out.sport = be16(34);
    out.dport = be16(36);
    // The UDP length is within the IP packet, which is within the frame: the payload is
    // what the UDP header claims.
    out.payload_len = ulen.saturating_sub(8);
    out.frag_id = 0;
    out.fragment = Fragment::None;
    out.vlan_tags = 0;
    out.bad_length = false;
    true
}

/// What the kernel's plain-UDP shortcut makes of `pkt`: `None` when [`plain_udp4_ports`]
/// does not answer for it, else the [`Parsed`] [`plain_udp4_into`] writes (tests, fuzzing:
/// it must equal the full parse's).
pub fn plain_udp4_slice(pkt: &[u8]) -> Option<Parsed> {
    plain_udp4_ports_slice(pkt)?;
    let start = pkt.as_ptr() as usize;
    let mut out = Parsed::default();
    // SAFETY: the slice is readable for its whole length, and the shortcut answered for it.
    unsafe { plain_udp4_into(start, start + pkt.len(), &mut out) }.then_some(out)
}

/// [`plain_udp4_ports`] over a byte slice (tests, fuzzing).
pub fn plain_udp4_ports_slice(pkt: &[u8]) -> Option<(u16, u16)> {
    let start = pkt.as_ptr() as usize;
    // SAFETY: the slice is readable for its whole length.
    unsafe { plain_udp4_ports(start, start + pkt.len(), pkt.len()) }
}

/// Parses a packet held in a byte slice (offline replay, tests, fuzzing).
pub fn parse_slice(pkt: &[u8]) -> Result<Parsed, ParseError> {
    let start = pkt.as_ptr() as usize;
    // SAFETY: the slice is readable for its whole length.
    unsafe { parse(start, start + pkt.len(), pkt.len()) }
}
