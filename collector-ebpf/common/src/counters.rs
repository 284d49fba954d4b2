//! Indices of the per-CPU counter array: packets seen per program, and every reason a packet
//! was not fully handled. Userspace sums them over CPUs and exports them as metrics.

/// One slot of [`crate::MAP_COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets seen by the XDP ingress program.
    XdpPackets = 0,
    /// Packets seen by the TC egress program.
    TcPackets = 1,
    /// SIP packets copied to the ring buffer.
    SipCopied = 2,
    /// UDP fragments of SIP hosts copied to the ring buffer.
    FragmentsCopied = 3,
    /// RTCP packets copied to the ring buffer.
    RtcpCopied = 4,
    /// Sampled RTP headers copied to the ring buffer.
    RtpSampled = 5,
    /// RTP packets that hit the MEDIA map and updated a stream.
    RtpMatched = 6,
    /// Packets that matched nothing (the common, cheap path).
    NoMatch = 7,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp = 8,
    /// A header ran past the end of the packet.
    Truncated = 9,
    /// IPv6 extension chain too long, or a VLAN stack deeper than two tags.
    UnsupportedHeaders = 10,
    /// Malformed header (IPv4 IHL < 5, TCP data offset < 5, UDP length too small).
    Malformed = 11,
    /// `bpf_ringbuf_output` failed: the ring was full.
    RingFull = 12,
    /// A copied packet was cut at the snap length.
    SnapCut = 13,
    /// A stream had more SSRCs than slots.
    SsrcOverflow = 14,
    /// Copying packet bytes failed (helper error).
    LoadFailed = 15,
    /// Recording a SIP host for fragment capture failed (map full).
    MapFull = 16,
    /// RTP packets hitting a MEDIA entry that are too short for their own header (fixed
    /// part, CSRC list, extension) or not RTP version 2.
    RtpInvalid = 17,
    /// Telephone-event (RFC 4733) packets counted outside the jitter.
    TelephoneEvents = 18,
    /// Packets whose payload check failed on a SIP port (neither a method nor `SIP/2.0`).
    SipPortNotSip = 19,
    /// A length field claims more than there is: the IPv4 total length (IPv6 payload
    /// length) runs past the packet, or the UDP length past the IP payload. The host's own
    /// stack drops these (RFC 791 §3.1, RFC 768); they are not handled further.
    BadLength = 20,
}

/// Number of counter slots (size of [`crate::MAP_COUNTERS`]).
pub const COUNTER_COUNT: u32 = 21;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::XdpPackets,
        Counter::TcPackets,
        Counter::SipCopied,
        Counter::FragmentsCopied,
        Counter::RtcpCopied,
        Counter::RtpSampled,
        Counter::RtpMatched,
        Counter::NoMatch,
        Counter::NotIp,
        Counter::Truncated,
        Counter::UnsupportedHeaders,
        Counter::Malformed,
        Counter::RingFull,
        Counter::SnapCut,
        Counter::SsrcOverflow,
        Counter::LoadFailed,
        Counter::MapFull,
        Counter::RtpInvalid,
        Counter::TelephoneEvents,
        Counter::SipPortNotSip,
        Counter::BadLength,
    ];

    /// The metric label of this counter.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::XdpPackets => "xdp_packets",
            Counter::TcPackets => "tc_packets",
            Counter::SipCopied => "sip_copied",
            Counter::FragmentsCopied => "fragments_copied",
            Counter::RtcpCopied => "rtcp_copied",
            Counter::RtpSampled => "rtp_sampled",
            Counter::RtpMatched => "rtp_matched",
            Counter::NoMatch => "no_match",
            Counter::NotIp => "not_ip",
            Counter::Truncated => "truncated",
            Counter::UnsupportedHeaders => "unsupported_headers",
            Counter::Malformed => "malformed",
            Counter::RingFull => "ring_full",
            Counter::SnapCut => "snap_cut",
            Counter::SsrcOverflow => "ssrc_overflow",
            Counter::LoadFailed => "load_failed",
            Counter::MapFull => "map_full",
            Counter::RtpInvalid => "rtp_invalid",
            Counter::TelephoneEvents => "telephone_events",
            Counter::SipPortNotSip => "sip_port_not_sip",
            Counter::BadLength => "bad_length",
        }
    }
}
