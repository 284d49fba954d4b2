//! RFC 3550 Appendix A.1 (`update_seq`), A.3 (expected, lost) and A.8 (jitter), transcribed
//! line by line from the RFC's C code, with floating-point jitter over exact arrival times.
//! This is the reference the integer, verifier-friendly update is tested against (on the
//! host and against the kernel's own numbers); it never runs in the datapath.
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
    // A.8
    pub transit: f64,
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
    pub fn jitter_update(&mut self, arrival: f64, ts: u32) {
        let transit = arrival - ts as f64;
        if self.have_transit {
            let d = (transit - self.transit).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = transit;
        self.have_transit = true;
    }
}
