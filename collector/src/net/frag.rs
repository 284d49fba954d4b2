//! IP fragment reassembly: IPv4 (RFC 791 §3.2, "fragmentation and reassembly") and IPv6
//! (RFC 8200 §4.5), with overlapping fragments discarding the whole datagram (RFC 5722, and
//! RFC 8200 §4.5 for exact duplicates, which are dropped alone).
//!
//! Bounded: datagrams in progress, fragments per datagram, reassembled size and age are all
//! limited, and every fragment or datagram given up is counted in [`FragStats`]. Time is
//! injected (`now_ns`), so the table is a pure data structure over its inputs.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{collections::HashMap, net::IpAddr};

use collector_common::parse::{Fragment, Parsed};
use thiserror::Error;

use super::{be16, be32, ip_addr};

/// IPv6 extension headers (RFC 8200 §4) walked while looking for the fragment header.
const NH_HOPOPTS: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AH: u8 = 51;
const NH_DSTOPTS: u8 = 60;
/// Most IPv6 extension headers walked.
const MAX_EXT: usize = 8;

/// Limits of the reassembly table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragConfig {
    /// Datagrams in progress at once.
    pub max_datagrams: usize,
    /// Fragments held for one datagram.
    pub max_fragments: usize,
    /// Largest reassembled IP payload (bytes).
    pub max_size: usize,
    /// A datagram not complete this long after its first fragment is dropped (ns).
    pub max_age_ns: u64,
}

impl Default for FragConfig {
    fn default() -> Self {
        Self {
            max_datagrams: 1024,
            max_fragments: 64,
            max_size: 65_535,
            max_age_ns: 30_000_000_000,
        }
    }
}

/// What the reassembler did, counted per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragStats {
    /// Fragments received.
    pub frag_fragments: u64,
    /// Datagrams reassembled.
    pub frag_reassembled: u64,
    /// Datagrams discarded because two fragments overlapped (RFC 5722).
    pub frag_overlap: u64,
    /// Exact duplicate fragments dropped (RFC 8200 §4.5).
    pub frag_duplicate: u64,
    /// Datagrams dropped incomplete after the maximum age.
    pub frag_timeout: u64,
    /// Fragments dropped because the table was full.
    pub frag_table_full: u64,
    /// Datagrams discarded for having too many fragments.
    pub frag_too_many: u64,
    /// Datagrams discarded for exceeding the maximum size.
    pub frag_too_big: u64,
    /// Fragments with impossible headers (bad length, inconsistent end) and the datagrams
    /// they made inconsistent.
    pub frag_malformed: u64,
    /// Fragments cut short by the capture (snap length): their datagram cannot complete.
    pub frag_truncated: u64,
    /// Fragments of a datagram already discarded.
    pub frag_discarded: u64,
}

/// Why a fragment was not (or no longer) usable.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FragError {
    /// The packet is not a fragment, or its headers cannot be read.
    #[error("not a fragment: {0}")]
    NotFragment(&'static str),
    /// The fragment's header is impossible or contradicts the datagram's other fragments.
    #[error("malformed fragment: {0}")]
    Malformed(&'static str),
    /// The capture holds fewer bytes than the IP header claims.
    #[error("fragment truncated by the capture")]
    Truncated,
    /// The fragment overlaps another one: the datagram is discarded (RFC 5722).
    #[error("overlapping fragment, datagram discarded")]
    Overlap,
    /// An exact duplicate of a fragment already held.
    #[error("duplicate fragment")]
    Duplicate,
    /// The datagram has more fragments than the limit.
    #[error("more than {max} fragments, datagram discarded")]
    TooMany {
        /// Configured limit.
        max: usize,
    },
    /// The datagram would be larger than the limit.
    #[error("datagram of at least {size} bytes exceeds the limit of {max}")]
    TooBig {
        /// Bytes the fragment reaches.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// The table of datagrams in progress is full.
    #[error("reassembly table full ({max} datagrams)")]
    TableFull {
        /// Configured limit.
        max: usize,
    },
    /// The datagram was discarded earlier; its later fragments are dropped too.
    #[error("datagram already discarded")]
    Discarded,
}

/// A reassembled IP payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// 4 or 6.
    pub ip_version: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (after any IPv6 extension headers of the fragmentable part).
    pub proto: u8,
    /// The upper-layer packet: for UDP, the header and the data.
    pub payload: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    version: u8,
    src: [u8; 16],
    dst: [u8; 16],
    /// IPv4 only (RFC 791 keys on the protocol too; RFC 8200 does not).
    proto: u8,
    id: u32,
}

#[derive(Debug)]
struct Part {
    off: usize,
    data: Vec<u8>,
}

impl Part {
    fn end(&self) -> usize {
        self.off + self.data.len()
    }
}

#[derive(Debug)]
struct Pending {
    first_ns: u64,
    parts: Vec<Part>,
    /// Length of the whole payload, known once the last fragment arrived.
    total: Option<usize>,
    /// Next header of the fragmentable part, from the IPv6 first fragment (RFC 8200 §4.5).
    first_next: Option<u8>,
    /// Given up: fragments are dropped until the entry ages out.
    dead: bool,
}

/// What the headers of one fragment say.
struct Info<'a> {
    off: usize,
    more: bool,
    data: &'a [u8],
    /// IPv4: the header's protocol. IPv6: the fragment header's next header.
    next: u8,
    id: u32,
}

fn info<'a>(frame: &'a [u8], p: &Parsed) -> Result<Info<'a>, FragError> {
    let l3 = usize::from(p.l3_off);
    let short = FragError::NotFragment("header runs past the frame");
    match p.ip_version {
        4 => {
            let ihl = usize::from(frame.get(l3).ok_or(short.clone())? & 0x0f) * 4;
            let tot = usize::from(be16(frame, l3 + 2).ok_or(short.clone())?);
            let id = be16(frame, l3 + 4).ok_or(short.clone())?;
            let fo = be16(frame, l3 + 6).ok_or(short.clone())?;
            let next = *frame.get(l3 + 9).ok_or(short)?;
            if tot < ihl || ihl < 20 {
                return Err(FragError::Malformed("ipv4 lengths"));
            }
            let data = frame.get(l3 + ihl..l3 + tot).ok_or(FragError::Truncated)?;
            Ok(Info {
                off: usize::from(fo & 0x1fff) * 8,
                more: fo & 0x2000 != 0,
                data,
                next,
                id: u32::from(id),
            })
        }
        6 => {
            let plen = usize::from(be16(frame, l3 + 4).ok_or(short.clone())?);
            let mut next = *frame.get(l3 + 6).ok_or(short.clone())?;
            let mut off = l3 + 40;
            let end = l3 + 40 + plen;
            for _ in 0..MAX_EXT {
                match next {
                    NH_HOPOPTS | NH_ROUTING | NH_DSTOPTS | NH_AH => {
                        let nh = *frame.get(off).ok_or(short.clone())?;
                        let len = usize::from(*frame.get(off + 1).ok_or(short.clone())?);
                        next = nh;
                        off += if next == NH_AH {
                            (len + 2) * 4
                        } else {
                            (len + 1) * 8
                        };
                    }
                    NH_FRAGMENT => {
                        let nh = *frame.get(off).ok_or(short.clone())?;
                        let fo = be16(frame, off + 2).ok_or(short.clone())?;
                        let id = be32(frame, off + 4).ok_or(short)?;
                        if off + 8 > end {
                            return Err(FragError::Malformed("fragment header past payload"));
                        }
                        let data = frame.get(off + 8..end).ok_or(FragError::Truncated)?;
                        return Ok(Info {
                            off: usize::from(fo >> 3) * 8,
                            more: fo & 1 != 0,
                            data,
                            next: nh,
                            id,
                        });
                    }
                    _ => return Err(FragError::NotFragment("no ipv6 fragment header")),
                }
            }
            Err(FragError::NotFragment("ipv6 extension chain too long"))
        }
        _ => Err(FragError::NotFragment("not ip")),
    }
}

/// Finds the upper-layer header in a reassembled IPv6 fragmentable part, which may start
/// with extension headers (RFC 8200 §4.1 order: destination options, routing, ...).
fn upper_layer(mut next: u8, payload: &[u8]) -> Result<(u8, usize), FragError> {
    let mut off = 0usize;
    for _ in 0..MAX_EXT {
        match next {
            NH_HOPOPTS | NH_ROUTING | NH_DSTOPTS | NH_AH => {
                let nh = *payload
                    .get(off)
                    .ok_or(FragError::Malformed("extension header"))?;
                let len = usize::from(
                    *payload
                        .get(off + 1)
                        .ok_or(FragError::Malformed("extension header"))?,
                );
                off += if next == NH_AH {
                    (len + 2) * 4
                } else {
                    (len + 1) * 8
                };
                next = nh;
            }
            NH_FRAGMENT => return Err(FragError::Malformed("nested fragment header")),
            _ => {
                return if off <= payload.len() {
                    Ok((next, off))
                } else {
                    Err(FragError::Malformed("extension header past payload"))
                };
            }
        }
    }
    Err(FragError::Malformed("extension chain too long"))
}

/// The table of datagrams being reassembled.
#[derive(Debug, Default)]
pub struct Reassembler {
    cfg: FragConfig,
    table: HashMap<Key, Pending>,
    stats: FragStats,
    last_sweep_ns: u64,
}

impl Reassembler {
    /// An empty table with the given limits.
    pub fn new(cfg: FragConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &FragStats {
        &self.stats
    }

    /// Datagrams in progress (including discarded ones waiting to age out).
    pub fn in_progress(&self) -> usize {
        self.table.len()
    }

    /// Drops datagrams older than the maximum age, counting the incomplete ones.
    pub fn expire(&mut self, now_ns: u64) {
        self.last_sweep_ns = now_ns;
        let max_age = self.cfg.max_age_ns;
        let stats = &mut self.stats;
        self.table.retain(|_, p| {
            let keep = now_ns.saturating_sub(p.first_ns) < max_age;
            if !keep && !p.dead {
                stats.frag_timeout += 1;
            }
            keep
        });
    }

    fn kill(&mut self, key: &Key, err: FragError) -> FragError {
        if let Some(p) = self.table.get_mut(key) {
            p.dead = true;
            p.parts = Vec::new();
        }
        match &err {
            FragError::Overlap => self.stats.frag_overlap += 1,
            FragError::TooMany { .. } => self.stats.frag_too_many += 1,
            FragError::TooBig { .. } => self.stats.frag_too_big += 1,
            FragError::Truncated => self.stats.frag_truncated += 1,
            FragError::Malformed(_) => self.stats.frag_malformed += 1,
            FragError::NotFragment(_)
            | FragError::Duplicate
            | FragError::TableFull { .. }
            | FragError::Discarded => {}
        }
        err
    }

    /// Adds one fragment (`frame` starts at the Ethernet header, `parsed` is its
    /// [`collector_common::parse::parse_slice`] result). Returns the datagram once complete.
    pub fn push(
        &mut self,
        now_ns: u64,
        frame: &[u8],
        parsed: &Parsed,
    ) -> Result<Option<Datagram>, FragError> {
        if parsed.fragment == Fragment::None {
            return Err(FragError::NotFragment("parser saw no fragment"));
        }
        self.stats.frag_fragments += 1;
        if now_ns.saturating_sub(self.last_sweep_ns) >= 1_000_000_000 {
            self.expire(now_ns);
        }
        let f = match info(frame, parsed) {
            Ok(f) => f,
            Err(e) => {
                match e {
                    FragError::Truncated => self.stats.frag_truncated += 1,
                    _ => self.stats.frag_malformed += 1,
                }
                return Err(e);
            }
        };
        let key = Key {
            version: parsed.ip_version,
            src: parsed.src,
            dst: parsed.dst,
            proto: if parsed.ip_version == 4 { f.next } else { 0 },
            id: f.id,
        };
        // RFC 8200 §4.5: every fragment but the last carries a multiple of 8 bytes.
        if f.data.is_empty() || (f.more && f.data.len() % 8 != 0) {
            self.stats.frag_malformed += 1;
            return Err(FragError::Malformed("fragment length"));
        }
        if !self.table.contains_key(&key) {
            if self.table.len() >= self.cfg.max_datagrams {
                self.expire(now_ns);
            }
            if self.table.len() >= self.cfg.max_datagrams {
                self.stats.frag_table_full += 1;
                return Err(FragError::TableFull {
                    max: self.cfg.max_datagrams,
                });
            }
            self.table.insert(
                key,
                Pending {
                    first_ns: now_ns,
                    parts: Vec::new(),
                    total: None,
                    first_next: None,
                    dead: false,
                },
            );
        }
        let end = f.off + f.data.len();
        let (max_frags, max_size) = (self.cfg.max_fragments, self.cfg.max_size);
        let Some(p) = self.table.get_mut(&key) else {
            return Err(FragError::Discarded);
        };
        if p.dead {
            self.stats.frag_discarded += 1;
            return Err(FragError::Discarded);
        }
        if end > max_size {
            return Err(self.kill(
                &key,
                FragError::TooBig {
                    size: end,
                    max: max_size,
                },
            ));
        }
        let inconsistent = match (p.total, f.more) {
            (Some(t), false) => t != end,
            (Some(t), true) => end > t,
            (None, false) => p.parts.iter().any(|q| q.end() > end),
            (None, true) => false,
        };
        if inconsistent {
            return Err(self.kill(
                &key,
                FragError::Malformed("fragment beyond the datagram end"),
            ));
        }
        // Where the fragment goes, or whether it collides with one already held.
        let mut at = Ok(p.parts.len());
        for (i, q) in p.parts.iter().enumerate() {
            if f.off < q.end() && q.off < end {
                at = Err(q.off == f.off && q.data == f.data);
                break;
            }
            if q.off > f.off {
                at = Ok(i);
                break;
            }
        }
        let at = match at {
            Ok(at) => at,
            Err(true) => {
                self.stats.frag_duplicate += 1;
                return Err(FragError::Duplicate);
            }
            Err(false) => return Err(self.kill(&key, FragError::Overlap)),
        };
        if p.parts.len() >= max_frags {
            return Err(self.kill(&key, FragError::TooMany { max: max_frags }));
        }
        if !f.more {
            p.total = Some(end);
        }
        if f.off == 0 {
            p.first_next = Some(f.next);
        }
        p.parts.insert(
            at,
            Part {
                off: f.off,
                data: f.data.to_vec(),
            },
        );
        let Some(total) = p.total else {
            return Ok(None);
        };
        let mut cursor = 0;
        for q in &p.parts {
            if q.off != cursor {
                return Ok(None);
            }
            cursor = q.end();
        }
        if cursor != total {
            return Ok(None);
        }
        let Some(done) = self.table.remove(&key) else {
            return Ok(None);
        };
        let mut payload = Vec::with_capacity(total);
        for q in done.parts {
            payload.extend_from_slice(&q.data);
        }
        let (proto, start) = match (parsed.ip_version, done.first_next) {
            (4, _) => (f.next, 0),
            (_, Some(next)) => match upper_layer(next, &payload) {
                Ok(v) => v,
                Err(e) => {
                    self.stats.frag_malformed += 1;
                    return Err(e);
                }
            },
            (_, None) => return Err(FragError::Malformed("no first fragment")),
        };
        if start > 0 {
            payload.drain(..start);
        }
        self.stats.frag_reassembled += 1;
        Ok(Some(Datagram {
            ip_version: parsed.ip_version,
            src: ip_addr(parsed.ip_version, parsed.src),
            dst: ip_addr(parsed.ip_version, parsed.dst),
            proto,
            payload,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use collector_common::parse::parse_slice;
    use etherparse::PacketBuilder;

    const SRC4: [u8; 4] = [198, 51, 100, 1];
    const DST4: [u8; 4] = [198, 51, 100, 2];
    const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// The UDP datagram (header and payload) etherparse builds for `payload`.
    fn udp4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4(SRC4, DST4, 64)
            .udp(5060, 5060);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v.split_off(14 + 20)
    }

    fn udp6(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv6(SRC6, DST6, 64)
            .udp(5060, 5060);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v.split_off(14 + 40)
    }

    /// An Ethernet frame with an IPv4 fragment, built per RFC 791 §3.1.
    fn frag4(id: u16, off: usize, more: bool, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let tot = (20 + data.len()) as u16;
        let fo = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&tot.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&fo.to_be_bytes());
        f.extend_from_slice(&[64, 17, 0, 0]);
        f.extend_from_slice(&SRC4);
        f.extend_from_slice(&DST4);
        f.extend_from_slice(data);
        f
    }

    /// An Ethernet frame with an IPv6 fragment: fixed header (RFC 8200 §3) and fragment
    /// header (§4.5) whose next header is UDP.
    fn frag6(id: u32, off: usize, more: bool, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[44, 64]);
        f.extend_from_slice(&SRC6);
        f.extend_from_slice(&DST6);
        let fo = ((off / 8) as u16) << 3 | u16::from(more);
        f.extend_from_slice(&[17, 0]);
        f.extend_from_slice(&fo.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    fn push(r: &mut Reassembler, now: u64, frame: &[u8]) -> Result<Option<Datagram>, FragError> {
        let p = parse_slice(frame).unwrap();
        r.push(now, frame, &p)
    }

    fn pieces(d: &[u8]) -> [(usize, bool, &[u8]); 3] {
        [
            (0, true, &d[..48]),
            (48, true, &d[48..96]),
            (96, false, &d[96..]),
        ]
    }

    #[test]
    fn ipv4_in_order() {
        let d = udp4(&[b'a'; 120]);
        let mut r = Reassembler::new(FragConfig::default());
        let p = pieces(&d);
        assert_eq!(push(&mut r, 0, &frag4(7, p[0].0, p[0].1, p[0].2)), Ok(None));
        assert_eq!(push(&mut r, 1, &frag4(7, p[1].0, p[1].1, p[1].2)), Ok(None));
        let got = push(&mut r, 2, &frag4(7, p[2].0, p[2].1, p[2].2))
            .unwrap()
            .unwrap();
        assert_eq!(got.payload, d);
        assert_eq!(got.proto, 17);
        assert_eq!(got.src, IpAddr::from(SRC4));
        assert_eq!(got.dst, IpAddr::from(DST4));
        assert_eq!(r.stats().frag_reassembled, 1);
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn ipv4_reverse_order_and_duplicate() {
        let d = udp4(&[b'b'; 120]);
        let mut r = Reassembler::new(FragConfig::default());
        let p = pieces(&d);
        assert_eq!(push(&mut r, 0, &frag4(8, p[2].0, p[2].1, p[2].2)), Ok(None));
        assert_eq!(push(&mut r, 0, &frag4(8, p[1].0, p[1].1, p[1].2)), Ok(None));
        // RFC 8200 §4.5: an exact duplicate is dropped alone.
        assert_eq!(
            push(&mut r, 0, &frag4(8, p[1].0, p[1].1, p[1].2)),
            Err(FragError::Duplicate)
        );
        let got = push(&mut r, 0, &frag4(8, p[0].0, p[0].1, p[0].2))
            .unwrap()
            .unwrap();
        assert_eq!(got.payload, d);
        assert_eq!(r.stats().frag_duplicate, 1);
    }

    #[test]
    fn overlap_discards_datagram() {
        let d = udp4(&[b'c'; 120]);
        let mut r = Reassembler::new(FragConfig::default());
        assert_eq!(push(&mut r, 0, &frag4(9, 0, true, &d[..48])), Ok(None));
        assert_eq!(
            push(&mut r, 0, &frag4(9, 40, true, &d[40..88])),
            Err(FragError::Overlap)
        );
        // RFC 5722: the fragments that follow are discarded too; nothing is delivered.
        assert_eq!(
            push(&mut r, 0, &frag4(9, 88, false, &d[88..])),
            Err(FragError::Discarded)
        );
        assert_eq!(
            push(&mut r, 0, &frag4(9, 48, true, &d[48..88])),
            Err(FragError::Discarded)
        );
        assert_eq!(r.stats().frag_overlap, 1);
        assert_eq!(r.stats().frag_reassembled, 0);
    }

    #[test]
    fn timeout_drops_incomplete_datagram() {
        let d = udp4(&[b'd'; 120]);
        let mut r = Reassembler::new(FragConfig::default());
        assert_eq!(push(&mut r, 0, &frag4(10, 0, true, &d[..48])), Ok(None));
        r.expire(29_999_999_999);
        assert_eq!(r.in_progress(), 1);
        r.expire(30_000_000_000);
        assert_eq!(r.in_progress(), 0);
        assert_eq!(r.stats().frag_timeout, 1);
        // The rest, arriving late, starts a new datagram that cannot complete.
        assert_eq!(
            push(&mut r, 31_000_000_000, &frag4(10, 48, false, &d[48..])),
            Ok(None)
        );
    }

    #[test]
    fn ipv6_fragments() {
        let d = udp6(&[b'e'; 150]);
        let mut r = Reassembler::new(FragConfig::default());
        let p = pieces(&d);
        assert_eq!(
            push(&mut r, 0, &frag6(0xdead_beef, p[1].0, p[1].1, p[1].2)),
            Ok(None)
        );
        assert_eq!(
            push(&mut r, 0, &frag6(0xdead_beef, p[0].0, p[0].1, p[0].2)),
            Ok(None)
        );
        let got = push(&mut r, 0, &frag6(0xdead_beef, p[2].0, p[2].1, p[2].2))
            .unwrap()
            .unwrap();
        assert_eq!(got.payload, d);
        assert_eq!((got.ip_version, got.proto), (6, 17));
        assert_eq!(got.src, IpAddr::from(SRC6));
        // Same id from another datagram family does not mix: IPv4 id 0xbeef stays apart.
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn limits() {
        let d = udp4(&[b'f'; 200]);
        let mut r = Reassembler::new(FragConfig {
            max_datagrams: 1,
            max_fragments: 2,
            max_size: 150,
            ..FragConfig::default()
        });
        assert_eq!(push(&mut r, 0, &frag4(1, 0, true, &d[..8])), Ok(None));
        assert_eq!(push(&mut r, 0, &frag4(1, 8, true, &d[8..16])), Ok(None));
        assert_eq!(
            push(&mut r, 0, &frag4(1, 16, true, &d[16..24])),
            Err(FragError::TooMany { max: 2 })
        );
        assert_eq!(
            push(&mut r, 0, &frag4(2, 0, true, &d[..8])),
            Err(FragError::TableFull { max: 1 })
        );
        r.expire(31_000_000_000);
        assert_eq!(
            push(&mut r, 31_000_000_000, &frag4(3, 144, false, &d[144..])),
            Err(FragError::TooBig {
                size: 208,
                max: 150
            })
        );
        // Not a multiple of 8 in a non-last fragment (RFC 8200 §4.5).
        assert_eq!(
            push(&mut r, 62_000_000_000, &frag4(4, 0, true, &d[..10])),
            Err(FragError::Malformed("fragment length"))
        );
        let s = r.stats();
        assert_eq!(
            (
                s.frag_too_many,
                s.frag_table_full,
                s.frag_too_big,
                s.frag_malformed
            ),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn truncated_fragment_is_counted() {
        let d = udp4(&[b'g'; 100]);
        let mut r = Reassembler::new(FragConfig::default());
        let mut f = frag4(11, 0, true, &d[..96]);
        f.truncate(f.len() - 10);
        assert_eq!(push(&mut r, 0, &f), Err(FragError::Truncated));
        assert_eq!(r.stats().frag_truncated, 1);
    }
}
