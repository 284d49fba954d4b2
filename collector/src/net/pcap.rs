//! Reads capture files (pcap, and pcapng per RFC draft-ietf-opsawg-pcapng, with the
//! `pcap-file` crate) and normalises every frame to what the shared L2..L4 parser expects:
//! bytes starting at an Ethernet header (IEEE 802.3). Frames of other link types
//! (tcpdump.org LINKTYPE_* registry: Linux cooked SLL 113 and SLL2 276, raw IP 101/228/229,
//! BSD NULL 0 and LOOP 108) get a synthesized 14-byte Ethernet header carrying the right
//! EtherType.
//!
//! A file that turns corrupt midway yields its good frames, then one error, then nothing.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{
    fs::File,
    io::{BufReader, Chain, Cursor, Read},
    path::Path,
};

use pcap_file::{
    pcap::PcapReader,
    pcapng::{
        blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        Block, PcapNgReader,
    },
    TsResolution,
};
use thiserror::Error;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETH_HLEN: usize = 14;

/// Link-layer header types this reader normalises (tcpdump.org LINKTYPE_* values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1): already what the parser expects.
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113): 16-byte cooked header, EtherType at offset 14.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): 20-byte cooked header, EtherType at offset 0.
    LinuxSll2,
    /// LINKTYPE_RAW (101): IPv4 or IPv6, told apart by the version nibble.
    RawIp,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_NULL (0): 4-byte address family in the capturing host's byte order.
    Null,
    /// LINKTYPE_LOOP (108): 4-byte address family in network byte order.
    Loop,
}

impl LinkType {
    /// The link type of a LINKTYPE_* code, if supported.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::Null,
            1 => Self::Ethernet,
            101 => Self::RawIp,
            108 => Self::Loop,
            113 => Self::LinuxSll,
            228 => Self::Ipv4,
            229 => Self::Ipv6,
            276 => Self::LinuxSll2,
            _ => return None,
        })
    }
}

/// Errors of reading a capture file.
#[derive(Debug, Error)]
pub enum PcapError {
    /// The file could not be opened or read.
    #[error("reading the capture failed")]
    Io(#[source] std::io::Error),
    /// The file starts with neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file (magic {0:#010x})")]
    BadMagic(u32),
    /// The file is corrupt or cut short.
    #[error("the capture file is corrupt")]
    Corrupt(#[source] pcap_file::PcapError),
    /// A packet timestamp is impossible.
    #[error("packet timestamp is invalid")]
    BadTimestamp,
    /// The file's link type is not one this reader normalises.
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u32),
}

/// Why one frame could not be normalised (the frame is skipped and counted).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than its link-layer header.
    #[error("frame shorter than its link-layer header")]
    Short,
    /// The link-layer header names a protocol that is not IP.
    #[error("link-layer protocol {0:#x} is not ip")]
    NotIp(u32),
    /// The frame's interface has a link type this reader does not normalise.
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u32),
}

/// A captured frame, starting at an Ethernet header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the packet on the wire, as the file records it (original link layer).
    pub orig_len: u32,
    /// The frame bytes, starting at an (original or synthesized) Ethernet header.
    pub data: Vec<u8>,
}

/// Frames skipped while reading, per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcapStats {
    /// Frames yielded.
    pub frames: u64,
    /// Frames shorter than their link-layer header.
    pub short_frames: u64,
    /// Frames whose link-layer header names a protocol other than IP.
    pub not_ip_frames: u64,
    /// Frames of interfaces with an unsupported link type (pcapng).
    pub unsupported_link_frames: u64,
}

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ETH_HLEN + payload.len());
    v.extend_from_slice(&[0u8; 12]);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ip_ethertype(first: Option<&u8>) -> Result<u16, FrameError> {
    match first.map(|b| b >> 4) {
        Some(4) => Ok(ETHERTYPE_IPV4),
        Some(6) => Ok(ETHERTYPE_IPV6),
        Some(v) => Err(FrameError::NotIp(u32::from(v))),
        None => Err(FrameError::Short),
    }
}

/// BSD address families of IPv4 and IPv6 (IPv6 differs between systems: Linux 10,
/// NetBSD/OpenBSD 24, FreeBSD 28, macOS 30).
fn af_ethertype(af: u32) -> Option<u16> {
    match af {
        2 => Some(ETHERTYPE_IPV4),
        10 | 24 | 28 | 30 => Some(ETHERTYPE_IPV6),
        _ => None,
    }
}

/// Rewrites one frame of link type `link` so it starts at an Ethernet header.
pub fn normalize(link: LinkType, data: &[u8]) -> Result<Vec<u8>, FrameError> {
    let be16 = |o: usize| -> Result<u16, FrameError> {
        match (data.get(o), data.get(o + 1)) {
            (Some(&a), Some(&b)) => Ok(u16::from_be_bytes([a, b])),
            _ => Err(FrameError::Short),
        }
    };
    let rest = |o: usize| data.get(o..).ok_or(FrameError::Short);
    match link {
        LinkType::Ethernet => {
            if data.len() < ETH_HLEN {
                return Err(FrameError::Short);
            }
            Ok(data.to_vec())
        }
        LinkType::LinuxSll => Ok(ethernet(be16(14)?, rest(16)?)),
        LinkType::LinuxSll2 => {
            let proto = be16(0)?;
            Ok(ethernet(proto, rest(20)?))
        }
        LinkType::RawIp => Ok(ethernet(ip_ethertype(data.first())?, data)),
        LinkType::Ipv4 => Ok(ethernet(ETHERTYPE_IPV4, data)),
        LinkType::Ipv6 => Ok(ethernet(ETHERTYPE_IPV6, data)),
        LinkType::Null | LinkType::Loop => {
            let h: [u8; 4] = data
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(FrameError::Short)?;
            let be = u32::from_be_bytes(h);
            let le = u32::from_le_bytes(h);
            let ethertype = if link == LinkType::Loop {
                af_ethertype(be)
            } else {
                // The writer's byte order is unknown: one reading is a small family number.
                af_ethertype(le).or_else(|| af_ethertype(be))
            };
            let ethertype = ethertype.ok_or(FrameError::NotIp(if le < be { le } else { be }))?;
            Ok(ethernet(ethertype, rest(4)?))
        }
    }
}

/// Converts a pcapng timestamp to ns using the interface's `if_tsresol` (default 10^-6 s)
/// and `if_tsoffset` (seconds).
fn ng_ts_ns(raw: u64, tsresol: u8, offset_s: u64) -> u64 {
    let exp = u32::from(tsresol & 0x7f);
    let ns: u128 = if tsresol & 0x80 == 0 {
        if exp <= 9 {
            u128::from(raw) * 10u128.pow(9 - exp)
        } else {
            10u128
                .checked_pow(exp - 9)
                .map_or(0, |d| u128::from(raw) / d)
        }
    } else {
        (u128::from(raw) * 1_000_000_000u128)
            .checked_shr(exp)
            .unwrap_or(0)
    };
    let total = ns + u128::from(offset_s) * 1_000_000_000u128;
    u64::try_from(total).unwrap_or(u64::MAX)
}

#[derive(Clone, Copy, Debug)]
struct Iface {
    link: Result<LinkType, u32>,
    tsresol: u8,
    offset_s: u64,
}

impl Iface {
    fn from_idb(idb: &InterfaceDescriptionBlock<'_>) -> Self {
        let code = u32::from(idb.linktype);
        let mut iface = Iface {
            link: LinkType::from_code(code).ok_or(code),
            tsresol: 6,
            offset_s: 0,
        };
        for opt in &idb.options {
            match opt {
                InterfaceDescriptionOption::IfTsResol(r) => iface.tsresol = *r,
                InterfaceDescriptionOption::IfTsOffset(o) => iface.offset_s = *o,
                _ => {}
            }
        }
        iface
    }
}

type Sniffed<R> = Chain<Cursor<[u8; 4]>, R>;

enum Inner<R: Read> {
    Pcap {
        reader: PcapReader<Sniffed<R>>,
        link: LinkType,
        nanos: bool,
    },
    Ng {
        reader: PcapNgReader<Sniffed<R>>,
        ifaces: Vec<Iface>,
    },
}

/// Frames of a pcap or pcapng capture, normalised to start at an Ethernet header.
pub struct PcapSource<R: Read> {
    inner: Inner<R>,
    done: bool,
    stats: PcapStats,
}

impl PcapSource<BufReader<File>> {
    /// Opens a capture file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PcapError> {
        let f = File::open(path).map_err(PcapError::Io)?;
        Self::new(BufReader::new(f))
    }
}

impl<R: Read> PcapSource<R> {
    /// Reads the file header from `reader` and picks pcap or pcapng by its magic number.
    pub fn new(mut reader: R) -> Result<Self, PcapError> {
        let mut magic = [0u8; 4];
        reader.read_exact(&mut magic).map_err(PcapError::Io)?;
        let m = u32::from_le_bytes(magic);
        let chained = Cursor::new(magic).chain(reader);
        let inner = match m {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => {
                let reader = PcapReader::new(chained).map_err(PcapError::Corrupt)?;
                let header = reader.header();
                let code = u32::from(header.datalink);
                let link = LinkType::from_code(code).ok_or(PcapError::UnsupportedLinkType(code))?;
                Inner::Pcap {
                    reader,
                    link,
                    nanos: header.ts_resolution == TsResolution::NanoSecond,
                }
            }
            0x0a0d_0d0a => Inner::Ng {
                reader: PcapNgReader::new(chained).map_err(PcapError::Corrupt)?,
                ifaces: Vec::new(),
            },
            other => return Err(PcapError::BadMagic(other.swap_bytes())),
        };
        Ok(Self {
            inner,
            done: false,
            stats: PcapStats::default(),
        })
    }

    /// Frames yielded and skipped so far.
    pub fn stats(&self) -> &PcapStats {
        &self.stats
    }

    fn count_skip(&mut self, e: FrameError) {
        match e {
            FrameError::Short => self.stats.short_frames += 1,
            FrameError::NotIp(_) => self.stats.not_ip_frames += 1,
            FrameError::UnsupportedLinkType(_) => self.stats.unsupported_link_frames += 1,
        }
    }

    /// The next frame; `None` at the end of the file or after an error.
    pub fn next_frame(&mut self) -> Option<Result<Frame, PcapError>> {
        if self.done {
            return None;
        }
        loop {
            let got = match &mut self.inner {
                Inner::Pcap {
                    reader,
                    link,
                    nanos,
                } => match reader.next_raw_packet()? {
                    Err(e) => Err(PcapError::Corrupt(e)),
                    Ok(p) => {
                        let frac = if *nanos {
                            Some(u64::from(p.ts_frac))
                        } else {
                            u64::from(p.ts_frac).checked_mul(1000)
                        };
                        match frac.filter(|&f| f < 1_000_000_000) {
                            None => Err(PcapError::BadTimestamp),
                            Some(frac) => Ok((
                                u64::from(p.ts_sec) * 1_000_000_000 + frac,
                                p.orig_len,
                                normalize(*link, &p.data),
                            )),
                        }
                    }
                },
                Inner::Ng { reader, ifaces } => match reader.next_block()? {
                    Err(e) => Err(PcapError::Corrupt(e)),
                    Ok(Block::SectionHeader(_)) => {
                        ifaces.clear();
                        continue;
                    }
                    Ok(Block::InterfaceDescription(idb)) => {
                        ifaces.push(Iface::from_idb(&idb));
                        continue;
                    }
                    Ok(Block::EnhancedPacket(epb)) => {
                        let raw = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                        ng_frame(ifaces, epb.interface_id, raw, epb.original_len, &epb.data)
                    }
                    Ok(Block::Packet(pb)) => ng_frame(
                        ifaces,
                        u32::from(pb.interface_id),
                        pb.timestamp,
                        pb.original_len,
                        &pb.data,
                    ),
                    Ok(Block::SimplePacket(sp)) => {
                        // No timestamp: the format gives none (§4.4).
                        ng_frame(ifaces, 0, 0, sp.original_len, &sp.data)
                    }
                    Ok(_) => continue,
                },
            };
            match got {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok((_, _, Err(e))) => self.count_skip(e),
                Ok((ts_ns, orig_len, Ok(data))) => {
                    self.stats.frames += 1;
                    return Some(Ok(Frame {
                        ts_ns,
                        orig_len,
                        data,
                    }));
                }
            }
        }
    }
}

type Normalised = (u64, u32, Result<Vec<u8>, FrameError>);

fn ng_frame(
    ifaces: &[Iface],
    id: u32,
    raw_ts: u64,
    orig_len: u32,
    data: &[u8],
) -> Result<Normalised, PcapError> {
    let Some(iface) = usize::try_from(id).ok().and_then(|i| ifaces.get(i)) else {
        return Err(PcapError::Corrupt(
            pcap_file::PcapError::InvalidInterfaceId(id),
        ));
    };
    let ts = ng_ts_ns(raw_ts, iface.tsresol, iface.offset_s);
    let frame = match iface.link {
        Ok(link) => normalize(link, data),
        Err(code) => Err(FrameError::UnsupportedLinkType(code)),
    };
    Ok((ts, orig_len, frame))
}

impl<R: Read> Iterator for PcapSource<R> {
    type Item = Result<Frame, PcapError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame()
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const IP4: &[u8] = &[
        0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];

    #[test]
    fn normalises_link_types() {
        let eth = |t: u16| {
            let mut v = vec![0u8; 12];
            v.extend_from_slice(&t.to_be_bytes());
            v.extend_from_slice(IP4);
            v
        };
        // SLL: packet type, ARPHRD, address length, 8 address bytes, protocol.
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(IP4);
        assert_eq!(normalize(LinkType::LinuxSll, &sll).unwrap(), eth(0x0800));
        // SLL2: protocol, reserved, ifindex, ARPHRD, packet type, address length, address.
        let mut sll2 = vec![
            0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        sll2.extend_from_slice(IP4);
        assert_eq!(normalize(LinkType::LinuxSll2, &sll2).unwrap(), eth(0x86dd));
        assert_eq!(normalize(LinkType::RawIp, IP4).unwrap(), eth(0x0800));
        assert_eq!(
            normalize(LinkType::RawIp, &[0x60]).unwrap()[12..14],
            [0x86, 0xdd]
        );
        assert_eq!(
            normalize(LinkType::RawIp, &[0x10]),
            Err(FrameError::NotIp(1))
        );
        let mut null_le = vec![2, 0, 0, 0];
        null_le.extend_from_slice(IP4);
        assert_eq!(normalize(LinkType::Null, &null_le).unwrap(), eth(0x0800));
        let mut null_be = vec![0, 0, 0, 30];
        null_be.extend_from_slice(IP4);
        assert_eq!(normalize(LinkType::Null, &null_be).unwrap(), eth(0x86dd));
        assert_eq!(
            normalize(LinkType::Loop, &null_le),
            Err(FrameError::NotIp(2))
        );
        assert_eq!(
            normalize(LinkType::LinuxSll, &sll[..15]),
            Err(FrameError::Short)
        );
        assert_eq!(
            normalize(LinkType::Ethernet, &[0; 13]),
            Err(FrameError::Short)
        );
    }

    #[test]
    fn pcapng_timestamp_resolutions() {
        assert_eq!(ng_ts_ns(1_500_000, 6, 0), 1_500_000_000);
        assert_eq!(ng_ts_ns(1_500_000_123, 9, 0), 1_500_000_123);
        assert_eq!(ng_ts_ns(15, 1, 2), 3_500_000_000);
        // 2^-10 s units: 1024 units = 1 s.
        assert_eq!(ng_ts_ns(2048, 0x80 | 10, 0), 2_000_000_000);
        assert_eq!(ng_ts_ns(5, 127, 0), 0);
    }

    fn pcap_header(link: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&link.to_le_bytes());
        h
    }

    fn record(sec: u32, usec: u32, data: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        for v in [sec, usec, data.len() as u32, data.len() as u32] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r.extend_from_slice(data);
        r
    }

    #[test]
    fn corrupt_tail_yields_good_frames_then_error() {
        let mut file = pcap_header(101);
        file.extend(record(10, 5, IP4));
        file.extend(record(11, 0, IP4));
        let whole = file.len();
        file.extend(record(12, 0, IP4));
        file.truncate(whole + 20);
        let mut src = PcapSource::new(&file[..]).unwrap();
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!(f.ts_ns, 10_000_005_000);
        assert_eq!(&f.data[12..14], &[0x08, 0x00]);
        assert_eq!(src.next_frame().unwrap().unwrap().ts_ns, 11_000_000_000);
        assert!(matches!(src.next_frame(), Some(Err(PcapError::Corrupt(_)))));
        assert!(src.next_frame().is_none());
        assert!(matches!(
            PcapSource::new(&b"abcdefgh"[..]),
            Err(PcapError::BadMagic(0x6162_6364))
        ));
        assert!(matches!(
            PcapSource::new(&pcap_header(147)[..]),
            Err(PcapError::UnsupportedLinkType(147))
        ));
    }

    #[test]
    fn reads_pcapng_with_nanosecond_interface() {
        // Section header block, little endian, version 1.0, unknown section length.
        let mut f = Vec::new();
        let block = |t: u32, body: &[u8]| {
            let len = 12 + body.len() as u32;
            let mut b = Vec::new();
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(body);
            b.extend_from_slice(&len.to_le_bytes());
            b
        };
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        f.extend(block(0x0a0d_0d0a, &shb));
        // Interface description: LINKTYPE_RAW, snaplen 0, option if_tsresol = 9, end.
        let mut idb = Vec::new();
        idb.extend_from_slice(&101u16.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        idb.extend_from_slice(&9u16.to_le_bytes());
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&[9, 0, 0, 0]);
        idb.extend_from_slice(&[0, 0, 0, 0]);
        f.extend(block(1, &idb));
        // Enhanced packet: interface 0, timestamp 1_000_000_007 ns.
        let ts: u64 = 1_000_000_007;
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(IP4.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(IP4.len() as u32).to_le_bytes());
        epb.extend_from_slice(IP4);
        f.extend(block(6, &epb));
        let frames: Vec<_> = PcapSource::new(&f[..]).unwrap().collect();
        assert_eq!(frames.len(), 1);
        let fr = frames[0].as_ref().unwrap();
        assert_eq!(fr.ts_ns, 1_000_000_007);
        assert_eq!(&fr.data[14..], IP4);
    }
}
