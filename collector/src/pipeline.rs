//! The userspace pipeline shared by the agent and replay: frames (from the kernel ring or a
//! capture file, starting at Ethernet) → [`crate::net::Decoder`] (fragments, TCP,
//! WebSocket) → [`crate::calls::Tracker`] (dialogs, media binding, CDRs, flow events) →
//! the privacy boundary ([`crate::privacy::apply`]).
//!
//! Non-SIP UDP goes to the media backend: in replay the kernel emulation counts RTP and
//! picks out RTCP; in the agent the kernel has already counted RTP and only copied RTCP
//! (and samples) reach userspace. Timers and media polls run as the injected clock passes
//! their deadlines, so replay is deterministic.
#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{collections::BTreeMap, net::SocketAddr};

use collector_common::Direction;
use collector_proto::v1::{Cdr, FlowEvent};

use crate::calls::{
    media::{EmulatedMedia, MediaTable, SdpMedia, UdpVerdict},
    tracker::FlowOut,
    Tracker,
};
use crate::net::{Decoder, DecoderConfig, NetEvent, NetStats};
use crate::privacy::{apply, Pseudonymizer};
use crate::sip::{SipError, SipLimits};

const NS: u64 = 1_000_000_000;

/// Where RTP is counted.
pub trait MediaBackend: MediaTable {
    /// What happens to a non-SIP UDP datagram that reached userspace.
    fn on_udp(
        &mut self,
        ts_ns: u64,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> UdpVerdict;
}

impl MediaBackend for EmulatedMedia {
    fn on_udp(
        &mut self,
        ts_ns: u64,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> UdpVerdict {
        EmulatedMedia::on_udp(self, ts_ns, src, dst, payload)
    }
}

/// True when `payload` starts like an RTCP packet (RFC 3550 §6.4: version 2, packet type
/// 200..=207, or 192..=223 for other RTCP types on a muxed port, RFC 5761 §4).
pub fn looks_like_rtcp(payload: &[u8]) -> bool {
    match (payload.first(), payload.get(1)) {
        (Some(&b0), Some(&pt)) => b0 >> 6 == 2 && (192..=223).contains(&pt),
        _ => false,
    }
}

/// Why `bytes` fails to parse as the tracker parses it (the message with the default
/// limits, then its SDP body); `other` if it parses after all.
fn error_reason(bytes: &[u8]) -> &'static str {
    match crate::sip::parse_message(bytes, &SipLimits::default()) {
        Err(e) => e.reason(),
        Ok(msg) => match msg.sdp_body() {
            Err(e) => e.reason(),
            Ok(Some(body)) => match SdpMedia::from_body(body) {
                Err(e) => e.reason(),
                Ok(_) => "other",
            },
            Ok(None) => "other",
        },
    }
}

/// The privacy policy applied at the boundary.
pub struct Privacy {
    /// The pseudonymizer.
    pub pz: Pseudonymizer,
    /// The consent header of the policy, if any.
    pub consent_header: Option<String>,
}

impl Privacy {
    /// Applies the policy to finished CDRs.
    pub fn cdrs(&self, cdrs: &mut [Cdr]) {
        for c in cdrs {
            let consent = apply::consent_of(&self.pz, self.consent_header.as_deref(), &c.consent);
            apply::apply_cdr(&self.pz.call(consent), c);
        }
    }

    /// Applies the policy to one flow event.
    pub fn flow(&self, f: FlowOut) -> FlowEvent {
        let consent = apply::consent_of(
            &self.pz,
            self.consent_header.as_deref(),
            f.consent.as_deref().unwrap_or(""),
        );
        let mut ev = f.into_event();
        apply::apply_flow(&self.pz.call(consent), &mut ev);
        ev
    }
}

/// How often the pipeline runs timers and reads media statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Timer tick interval (ns).
    pub tick_ns: u64,
    /// Media statistics poll interval (ns).
    pub poll_ns: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            tick_ns: NS,
            poll_ns: NS,
        }
    }
}

/// Frames in; CDRs and flow events out.
pub struct Pipeline<M> {
    decoder: Decoder<SipError>,
    tracker: Tracker,
    media: M,
    privacy: Option<Privacy>,
    schedule: Schedule,
    events: Vec<NetEvent>,
    next_tick: u64,
    next_poll: u64,
    now: u64,
    sip_errors: BTreeMap<&'static str, u64>,
}

impl<M: MediaBackend> Pipeline<M> {
    /// A pipeline; `privacy` None prints identifiers in clear (replay without a policy).
    pub fn new(
        decoder: DecoderConfig,
        tracker: Tracker,
        media: M,
        privacy: Option<Privacy>,
        schedule: Schedule,
    ) -> Self {
        Self {
            decoder: Decoder::with_framer(decoder, crate::sip::stream_framer),
            tracker,
            media,
            privacy,
            schedule,
            events: Vec::new(),
            next_tick: 0,
            next_poll: 0,
            now: 0,
            sip_errors: BTreeMap::new(),
        }
    }

    /// The tracker.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The tracker, mutably (kernel counters for coverage).
    pub fn tracker_mut(&mut self) -> &mut Tracker {
        &mut self.tracker
    }

    /// The media backend.
    pub fn media(&self) -> &M {
        &self.media
    }

    /// The media backend, mutably.
    pub fn media_mut(&mut self) -> &mut M {
        &mut self.media
    }

    /// Decoder counters.
    pub fn net_stats(&self) -> NetStats {
        self.decoder.stats()
    }

    /// SIP messages and SDP bodies the tracker could not parse, by reason
    /// ([`SipError::reason`], `sdp_*` for SDP); the counts sum to the tracker's
    /// `parse_errors + sdp_errors`.
    pub fn sip_errors(&self) -> &BTreeMap<&'static str, u64> {
        &self.sip_errors
    }

    /// Feeds one frame (from its Ethernet header) captured at `ts_ns`.
    pub fn feed_frame(&mut self, ts_ns: u64, frame: &[u8], direction: Option<Direction>) {
        self.decoder.feed(ts_ns, frame, direction, &mut self.events);
        // Taken for the loop and put back after, so its allocation serves every frame.
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            match ev {
                NetEvent::Sip(p) => {
                    let before = self.tracker.stats();
                    self.tracker.on_sip(&p, &mut self.media);
                    let after = self.tracker.stats();
                    let failed = after
                        .parse_errors
                        .saturating_sub(before.parse_errors)
                        .saturating_add(after.sdp_errors.saturating_sub(before.sdp_errors));
                    if failed > 0 {
                        // The tracker counts failures without keeping the error; parsing the
                        // failed message again (rare) names the reason.
                        *self.sip_errors.entry(error_reason(&p.bytes)).or_insert(0) += failed;
                    }
                }
                NetEvent::Udp(u) => {
                    if self.media.on_udp(u.ts_ns, u.src, u.dst, &u.payload) == UdpVerdict::Rtcp {
                        self.tracker.on_rtcp(u.ts_ns, u.src, u.dst, &u.payload);
                    }
                }
            }
        }
        self.events = events;
        self.advance(ts_ns);
    }

    /// Lets time pass to `now`: reads media statistics and runs timers when due.
    pub fn advance(&mut self, now: u64) {
        if now < self.now {
            // Capture files are not always in time order; the clock never goes back.
            return;
        }
        self.now = now;
        if now >= self.next_poll {
            self.tracker.poll_media(now, &mut self.media);
            self.next_poll = now.saturating_add(self.schedule.poll_ns);
        }
        if now >= self.next_tick {
            self.decoder.expire(now);
            self.tracker.tick(now, &mut self.media);
            self.next_tick = now.saturating_add(self.schedule.tick_ns);
        }
    }

    /// Applies the media map writes queued since the last flush (the agent calls it after
    /// every round of records).
    pub fn flush_media(&mut self) {
        self.tracker.flush_media(&mut self.media);
    }

    /// Ends the observation at `now`: every call left gets its CDR.
    pub fn finish(&mut self, now: u64) {
        let now = now.max(self.now);
        self.tracker.tick(now, &mut self.media);
        self.tracker.finish(now, &mut self.media);
        self.flush_media();
    }

    /// The CDRs produced so far, privacy applied.
    pub fn drain_cdrs(&mut self) -> Vec<Cdr> {
        let mut cdrs = self.tracker.drain_cdrs();
        if let Some(p) = &self.privacy {
            p.cdrs(&mut cdrs);
        }
        cdrs
    }

    /// The flow events produced so far, privacy applied.
    pub fn drain_flows(&mut self) -> Vec<FlowEvent> {
        let flows = self.tracker.drain_flows().into_iter();
        match &self.privacy {
            Some(p) => flows.map(|f| p.flow(f)).collect(),
            None => flows.map(FlowOut::into_event).collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::calls::{tracker::CdrIds, CallsConfig};

    /// Ethernet + IPv4 (no checksum needed by the decoder) + UDP 5060 → 5060.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0, 198, 51, 100, 1, 198, 51, 100, 2]);
        f.extend_from_slice(&5060u16.to_be_bytes());
        f.extend_from_slice(&5060u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn invite(call_id: Option<&str>, body: &str) -> Vec<u8> {
        let call_id = call_id
            .map(|c| format!("Call-ID: {c}\r\n"))
            .unwrap_or_default();
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "INVITE sip:bob@198.51.100.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@198.51.100.1>;tag=a\r\nTo: <sip:bob@198.51.100.2>\r\n\
             {call_id}CSeq: 1 INVITE\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn sip_errors_are_counted_by_reason() {
        let ports = [5060u16];
        let decoder = DecoderConfig {
            sip_ports: ports.to_vec(),
            ..DecoderConfig::default()
        };
        let tracker = Tracker::new(CallsConfig::default(), "t", CdrIds::Derived([0; 32]));
        let media = EmulatedMedia::new(&ports, 64);
        let mut pipe = Pipeline::new(decoder, tracker, media, None, Schedule::default());
        // RFC 3261 §8.1.1: Call-ID is mandatory; RFC 4566 §5: an SDP starts with `v=`.
        let no_sdp_version = "o=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nt=0 0\r\n";
        let frames = [
            invite(None, ""),
            invite(None, ""),
            invite(Some("ok-1"), ""),
            invite(Some("bad-sdp"), no_sdp_version),
        ];
        for (i, f) in frames.iter().enumerate() {
            pipe.feed_frame(1_000_000 * (i as u64 + 1), &frame(f), None);
        }
        let want: BTreeMap<&'static str, u64> =
            [("missing_header", 2), ("sdp_missing_version", 1)].into();
        assert_eq!(pipe.sip_errors(), &want);
        let stats = pipe.tracker().stats();
        assert_eq!(stats.parse_errors + stats.sdp_errors, 3);
    }
}
