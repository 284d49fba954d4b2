//! RFC 3550 Appendix A.1 (`update_seq`), A.3 (expected, lost) and A.8 (jitter), transcribed
//! line by line from the RFC's C code, with floating-point jitter over exact arrival times.
//! This is the reference the integer, verifier-friendly update is tested against (on the
//! host and against the kernel's own numbers); it never runs in the datapath.
//!
//! [`TsharkCount`] is the second reference: tshark's per-stream counts, which the update
//! follows where it deliberately leaves A.1 (counting the probation packets).
#![allow(missing_docs, clippy::indexing_slicing)]

/// One source's state (the RFC's `source` struct).
#[derive(Default, Debug)]
pub struct RefSource {
    pub max_seq: u16,
    pub cycles: u32,
    pub base_seq: u32,
    pub bad_seq: u32,
    pub probation: u32,
    pub received: u32,
    // A.8: the previous packet's arrival (timestamp units) and RTP timestamp.
    pub last_arrival: f64,
    pub last_ts: u32,
    pub jitter: f64,
    pub have_transit: bool,
}

const RTP_SEQ_MOD_REF: u32 = 1 << 16;

impl RefSource {
    pub fn init_seq(&mut self, seq: u16) {
        self.base_seq = seq as u32;
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD_REF + 1;
        self.cycles = 0;
        self.received = 0;
    }
    pub fn new(seq: u16) -> Self {
        let mut s = RefSource::default();
        s.init_seq(seq);
        s.max_seq = seq.wrapping_sub(1);
        s.probation = 2; // MIN_SEQUENTIAL
        s
    }
    pub fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return true;
                }
            } else {
                self.probation = 2 - 1;
                self.max_seq = seq;
            }
            return false;
        } else if udelta < 3000 {
            if seq < self.max_seq {
                self.cycles += RTP_SEQ_MOD_REF;
            }
            self.max_seq = seq;
        } else if (udelta as u32) <= RTP_SEQ_MOD_REF - 100 {
            if seq as u32 == self.bad_seq {
                self.init_seq(seq);
            } else {
                self.bad_seq = (seq as u32 + 1) & (RTP_SEQ_MOD_REF - 1);
                return false;
            }
        } else {
            // duplicate or reordered packet
        }
        self.received += 1;
        true
    }
    pub fn expected(&self) -> i64 {
        (self.cycles as i64 + self.max_seq as i64) - self.base_seq as i64 + 1
    }
    pub fn lost(&self) -> i64 {
        self.expected() - self.received as i64
    }
    /// A.8 with `arrival` in timestamp units as a real number.
    ///
    /// The RFC's code subtracts 32-bit timestamps (`transit = arrival - r->ts`, then
    /// `d = transit - s->transit`), so a timestamp wrap (RFC 3550 §5.1: modulo 2^32) is no
    /// jump: D is the arrival difference minus the timestamp difference taken modulo 2^32
    /// as a signed number, as here.
    pub fn jitter_update(&mut self, arrival: f64, ts: u32) {
        if self.have_transit {
            let ts_delta = f64::from(ts.wrapping_sub(self.last_ts) as i32);
            let d = ((arrival - self.last_arrival) - ts_delta).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_arrival = arrival;
        self.last_ts = ts;
        self.have_transit = true;
    }
}

/// How tshark's `rtp,streams` counts one stream (Wireshark 4.0, `rtppacket_analyse` in
/// `ui/tap-rtp-analysis.c` and the table in `ui/cli/tap-rtp.c`), restated here: the first
/// packet seen is the base; a sequence number below the base's starts a new cycle (once, until
/// one above the base is seen again), as does 0 right after 65535; the last packet's sequence
/// number ends the range; every packet counts.
///
/// Why a second reference: the update deliberately differs from RFC 3550 A.1 in its base
/// (the source's first packet, not the end of the probation; see the `rtp` module doc), so
/// its counts are compared with this one, and its sequence tracking and jitter with
/// [`RefSource`], which stays the RFC's code.
#[derive(Default, Debug)]
pub struct TsharkCount {
    pub seen: bool,
    pub start_seq: u16,
    pub stop_seq: u16,
    pub cycles: u32,
    pub under: bool,
    pub total: u32,
}

impl TsharkCount {
    pub fn update(&mut self, seq: u16) {
        if !self.seen {
            self.seen = true;
            self.start_seq = seq;
        } else if !self.under && (seq < self.start_seq || (seq == 0 && self.stop_seq == 65535)) {
            self.cycles += 1;
            self.under = true;
        } else if seq > self.start_seq && self.under {
            self.under = false;
        }
        self.stop_seq = seq;
        self.total += 1;
    }
    pub fn expected(&self) -> i64 {
        i64::from(self.stop_seq) + i64::from(self.cycles) * 65536 - i64::from(self.start_seq) + 1
    }
    pub fn lost(&self) -> i64 {
        self.expected() - i64::from(self.total)
    }
}
