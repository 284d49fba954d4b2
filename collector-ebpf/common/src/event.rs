//! The ring-buffer event: a fixed header followed by the first `cap_len` bytes of the packet,
//! starting at the Ethernet header.

/// Version of [`EventHeader`]; bumped on any layout change.
pub const EVENT_VERSION: u8 = 1;

/// What an event carries.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A SIP packet (UDP or TCP, recognised by port and payload).
    Sip = 1,
    /// A UDP IP fragment between hosts that exchange SIP.
    Fragment = 2,
    /// An RTCP packet of a matched media stream.
    Rtcp = 3,
    /// A sampled RTP packet (headers only, up to the snap length).
    RtpSample = 4,
}

impl EventKind {
    /// Decodes the kind byte of a header.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Sip),
            2 => Some(Self::Fragment),
            3 => Some(Self::Rtcp),
            4 => Some(Self::RtpSample),
            _ => None,
        }
    }
}

/// Which hook saw the packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// XDP: the packet arrived on the interface.
    Ingress = 0,
    /// TC egress: the packet left through the interface.
    Egress = 1,
}

/// Header of every ring-buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventHeader {
    /// [`EventKind`] as a byte.
    pub kind: u8,
    /// [`EVENT_VERSION`].
    pub version: u8,
    /// [`Direction`] as a byte.
    pub direction: u8,
    /// Bit 0: the copy was cut at the snap length.
    pub flags: u8,
    /// Interface index the packet was seen on.
    pub ifindex: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the program ran.
    pub ts_ns: u64,
    /// Length of the packet on the wire (bytes, from the Ethernet header).
    pub orig_len: u32,
    /// Bytes of packet that follow this header.
    pub cap_len: u32,
    /// Offset of the IP header from the start of the packet.
    pub l3_off: u16,
    /// Offset of the UDP/TCP header (0 for a non-first fragment).
    pub l4_off: u16,
    /// Offset of the L4 payload (0 for a non-first fragment).
    pub l7_off: u16,
    /// Explicit padding.
    pub _pad: u16,
}

impl EventHeader {
    /// Flag: the copy was cut at the snap length.
    pub const FLAG_SNAP_CUT: u8 = 1;
    /// Size of the header in bytes.
    pub const LEN: usize = core::mem::size_of::<Self>();

    /// Reads a header from the start of `buf` (userspace side of the ring).
    pub fn read(buf: &[u8]) -> Option<Self> {
        let b: &[u8; Self::LEN] = buf.get(..Self::LEN)?.try_into().ok()?;
        Some(Self {
            kind: b[0],
            version: b[1],
            direction: b[2],
            flags: b[3],
            ifindex: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            ts_ns: u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
            orig_len: u32::from_ne_bytes([b[16], b[17], b[18], b[19]]),
            cap_len: u32::from_ne_bytes([b[20], b[21], b[22], b[23]]),
            l3_off: u16::from_ne_bytes([b[24], b[25]]),
            l4_off: u16::from_ne_bytes([b[26], b[27]]),
            l7_off: u16::from_ne_bytes([b[28], b[29]]),
            _pad: 0,
        })
    }
}

const _: () = assert!(EventHeader::LEN == 32);
