//! A call's message ladder: every SIP message of the call as captured (hops and
//! retransmissions included), bounded per call, carried by the CDR (`Cdr.ladder`) and by
//! the live `SipMessage` flow events, which are made from the same step.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::borrow::Cow;

#[allow(
    clippy::wildcard_imports,
    reason = "the tracker's types and imports, shared by its parts"
)]
use super::*;
use collector_proto::v1::LadderStep;

/// Steps kept from the start of a call (the setup).
pub const LADDER_HEAD: usize = 48;
/// Steps kept from the end of a call (the latest refreshes and the teardown).
const LADDER_TAIL: usize = 16;

/// What a step is: a request's method or a response's status.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Label {
    Method(Cow<'static, str>),
    Status(u16),
}

/// One captured message, kept compact (no formatted strings until a CDR or an event is
/// made from it).
#[derive(Clone, Debug)]
pub(crate) struct Step {
    ts_ns: u64,
    label: Label,
    cseq: u32,
    cseq_method: Cow<'static, str>,
    src: SocketAddr,
    dst: SocketAddr,
    direction: Option<Direction>,
    transport: Transport,
    has_sdp: bool,
    retransmission: bool,
}

impl Step {
    pub(super) fn of(pkt: &SipPacket, msg: &SipMessage<'_>, retransmission: bool) -> Self {
        let cseq = msg.cseq();
        Step {
            ts_ns: pkt.ts_ns,
            label: match msg.status_code() {
                Some(code) if !msg.is_request() => Label::Status(code),
                _ => Label::Method(msg.method().to_name()),
            },
            cseq: cseq.seq,
            cseq_method: cseq.method.to_name(),
            src: pkt.src,
            dst: pkt.dst,
            direction: pkt.direction,
            transport: pkt.transport,
            has_sdp: matches!(msg.sdp_body(), Ok(Some(_))),
            retransmission,
        }
    }

    /// The message as the flow events and the CDR carry it (addresses in clear: the
    /// privacy boundary maps them).
    pub(crate) fn message(&self) -> collector_proto::v1::SipMessage {
        collector_proto::v1::SipMessage {
            method_or_status: match &self.label {
                Label::Method(m) => m.to_string(),
                Label::Status(code) => code.to_string(),
            },
            cseq: self.cseq,
            cseq_method: self.cseq_method.to_string(),
            from: self.src.ip().to_canonical().to_string(),
            to: self.dst.ip().to_canonical().to_string(),
            direction: match self.direction {
                Some(Direction::Ingress) => SipDirection::Ingress,
                Some(Direction::Egress) => SipDirection::Egress,
                None => SipDirection::Unspecified,
            } as i32,
            transport: cdr::transport_name(self.transport).to_owned(),
            has_sdp: self.has_sdp,
        }
    }

    pub(crate) fn time_ms(&self) -> u64 {
        self.ts_ns / MS
    }

    fn step(&self) -> LadderStep {
        LadderStep {
            time_ms: self.time_ms(),
            message: Some(self.message()),
            retransmission: self.retransmission,
        }
    }
}

/// The first [`LADDER_HEAD`] and the last [`LADDER_TAIL`] steps of a call, and how many
/// fell between them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ladder {
    head: Vec<Step>,
    tail: VecDeque<Step>,
    omitted: u32,
}

impl Ladder {
    pub(super) fn push(&mut self, step: Step) {
        if self.head.len() < LADDER_HEAD {
            self.head.push(step);
            return;
        }
        if self.tail.len() >= LADDER_TAIL {
            self.tail.pop_front();
            self.omitted = self.omitted.saturating_add(1);
        }
        self.tail.push_back(step);
    }

    /// The step pushed last.
    pub(crate) fn last(&self) -> Option<&Step> {
        self.tail.back().or_else(|| self.head.last())
    }

    /// The CDR's `ladder` and `ladder_omitted`.
    pub(crate) fn to_cdr(&self) -> (Vec<LadderStep>, u32) {
        let steps = self.head.iter().chain(&self.tail).map(Step::step).collect();
        (steps, self.omitted)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn step(i: u64) -> Step {
        Step {
            ts_ns: i * MS,
            label: Label::Method(Cow::Borrowed("OPTIONS")),
            cseq: u32::try_from(i).unwrap(),
            cseq_method: Cow::Borrowed("OPTIONS"),
            src: "198.18.0.1:5060".parse().unwrap(),
            dst: "198.18.0.2:5060".parse().unwrap(),
            direction: None,
            transport: Transport::Udp,
            has_sdp: false,
            retransmission: false,
        }
    }

    #[test]
    fn keeps_the_first_48_and_the_last_16_steps() {
        let mut ladder = Ladder::default();
        for i in 0..100 {
            ladder.push(step(i));
            assert_eq!(ladder.last().unwrap().time_ms(), i);
        }
        let (steps, omitted) = ladder.to_cdr();
        assert_eq!(omitted, 100 - 48 - 16);
        let times: Vec<u64> = steps.iter().map(|s| s.time_ms).collect();
        let want: Vec<u64> = (0..48).chain(84..100).collect();
        assert_eq!(times, want);
        assert_eq!(steps[47].message.as_ref().unwrap().cseq, 47);
    }

    #[test]
    fn a_short_call_keeps_every_step() {
        let mut ladder = Ladder::default();
        for i in 0..7 {
            ladder.push(step(i));
        }
        let (steps, omitted) = ladder.to_cdr();
        assert_eq!((steps.len(), omitted), (7, 0));
    }
}
