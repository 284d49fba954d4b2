//! The ABI shared by the kernel programs and the userspace agent.
//!
//! Everything that crosses the kernel/user boundary is defined here once: map and program
//! names, the ring-buffer event header, the counter indices, the MEDIA map key and value, the
//! bounded L2..L4 packet parser and the RFC 3550 RTP stream update. The kernel and the offline
//! replay run the same code, so a capture replayed on the host gives the numbers the kernel
//! would have computed.
#![no_std]
#![deny(clippy::indexing_slicing, clippy::panic)]

pub mod counters;
pub mod event;
pub mod media;
pub mod parse;
pub mod rtp;

pub use counters::Counter;
pub use event::{Direction, EventHeader, EventKind, EVENT_VERSION};
pub use media::{MediaKey, MediaValue, RtpStream, SSRC_SLOTS};

/// Name of the XDP ingress program.
pub const PROG_XDP: &str = "sip_xdp";
/// Name of the TC clsact egress program.
pub const PROG_TC_EGRESS: &str = "sip_tc_egress";

/// RINGBUF carrying [`EventHeader`] + packet bytes to userspace.
pub const MAP_EVENTS: &str = "EVENTS";
/// PERCPU_ARRAY of `u64`, indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";
/// ARRAY of [`SIP_PORT_WORDS`] `u64`: two bits per port, 32 ports per word; bit `2·(p % 32)`
/// marks SIP over UDP/TCP, the next bit SIP over WebSocket.
pub const MAP_SIP_PORTS: &str = "SIP_PORTS";
/// Words of [`MAP_SIP_PORTS`].
pub const SIP_PORT_WORDS: u32 = 65_536 / 32;
/// The global holding the programs' [`Config`], set by the loader.
pub const GLOBAL_CONFIG: &str = "COLLECTOR_CONFIG";
/// HASH [`MediaKey`] -> [`MediaValue`], filled and emptied by userspace from SDP.
pub const MAP_MEDIA: &str = "MEDIA";
/// LRU_HASH of [`HostKey`] -> last-seen ns: hosts that exchange SIP, whose UDP fragments are
/// copied to userspace (later fragments carry no UDP header, so ports cannot decide).
pub const MAP_SIP_HOSTS: &str = "SIP_HOSTS";

/// Largest snap length the programs support (bytes of packet copied after the header).
pub const SNAP_MAX: usize = 4096;
/// Default snap length.
pub const SNAP_DEFAULT: u32 = 2048;
/// Default number of entries of the MEDIA map.
pub const MEDIA_ENTRIES_DEFAULT: u32 = 65_536;
/// Default number of entries of the SIP_HOSTS map.
pub const SIP_HOSTS_ENTRIES_DEFAULT: u32 = 4096;
/// Default ring buffer size in bytes (power of two, multiple of the page size).
pub const RING_BYTES_DEFAULT: u32 = 8 << 20;

/// Configuration of the programs, fixed at load time in the [`GLOBAL_CONFIG`] global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bytes of each copied packet (clamped to `1..=SNAP_MAX`).
    pub snap_len: u32,
    /// Copy one RTP header in `rtp_sample_every` (0 = none).
    pub rtp_sample_every: u32,
    /// Bit 0: copy RTCP of matched streams. Bit 1: copy UDP fragments of SIP hosts.
    pub flags: u32,
    /// Explicit padding.
    pub _pad: u32,
}

impl Config {
    /// Copy RTCP packets of matched streams.
    pub const FLAG_RTCP: u32 = 1;
    /// Copy UDP fragments between hosts that exchange SIP.
    pub const FLAG_FRAGMENTS: u32 = 2;
}

impl Config {
    /// The defaults: snap length 2048, no RTP sampling, RTCP and fragments copied.
    pub const DEFAULT: Self = Self {
        snap_len: SNAP_DEFAULT,
        rtp_sample_every: 0,
        flags: Self::FLAG_RTCP | Self::FLAG_FRAGMENTS,
        _pad: 0,
    };
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Key of [`MAP_SIP_HOSTS`]: an address, IPv4 mapped into IPv6 (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct HostKey {
    /// The address in network byte order.
    pub addr: [u8; 16],
}

/// Port kind in [`MAP_SIP_PORTS`]: plain SIP (UDP or TCP).
pub const PORT_SIP: u8 = 1;
/// Port kind in [`MAP_SIP_PORTS`]: SIP over WebSocket (RFC 7118); TCP payloads are copied
/// without the start-of-message check, since frames hide it.
pub const PORT_SIP_WS: u8 = 2;

const _: () = assert!(core::mem::size_of::<Config>() == 16);
const _: () = assert!(core::mem::size_of::<HostKey>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, with explicit padding and no pointers,
    // so any bit pattern the kernel writes is a valid value.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HostKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MediaKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MediaValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::media::EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::media::EndpointValue {}
}
