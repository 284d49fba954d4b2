//! RTP stream statistics per RFC 3550 Appendix A.1 (sequence tracking: wrap-around,
//! probation, restart on a large jump) and A.8 (interarrival jitter), written once for the
//! kernel and for offline replay.
//!
//! One deliberate difference from A.1: the packets of the probation are counted. A.1 starts
//! `base_seq` and `received` at the packet that ends the probation, so a loss among the
//! first packets (the second lost: the probation restarts, and the base moves past the gap)
//! never shows in `lost`. A passive observer reports what arrived, as tshark's `rtp,streams`
//! does: the base is the first packet seen, `received` every packet from it, and A.3's
//! expected = extended highest − base + 1. Probation still says when the source has become
//! valid (`MIN_SEQUENTIAL` sequential packets), and A.1's wrap and restart handling apply
//! from the second packet on.
//!
//! Integer only, no loops that depend on data, no division by a value that may be zero: the
//! same code must pass the eBPF verifier.

use crate::media::{
    MediaValue, PlayoutAnchor, RtpStream, ANCHOR_EPOCH_NS, DELAY_BUCKETS_MS, DELAY_BUCKET_COUNT,
    LATE_BUCKETS_MS, LATE_BUCKET_COUNT, LOSS_BURST_BUCKETS, SSRC_SLOTS,
};

/// RFC 3550 A.1: a jump of this many sequence numbers or more is a dropout, not loss.
pub const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: packets this far behind the highest are reordered or duplicated.
pub const MAX_MISORDER: u16 = 100;
/// RFC 3550 A.1: sequential packets needed before a source is valid.
pub const MIN_SEQUENTIAL: u8 = 2;
const RTP_SEQ_MOD: u32 = 1 << 16;
/// A gap between arrivals longer than this (ns, about 9 minutes) is clamped before the
/// jitter arithmetic, so the products below cannot overflow on a stream paused for hours.
const MAX_ARRIVAL_DELTA_NS: u64 = 1 << 39;

/// The fields of an RTP header the statistics need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpFields {
    /// Payload type (7 bits).
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub ts: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

impl RtpFields {
    /// Reads the fixed RTP header from the first 12 bytes of a UDP payload: version 2 only.
    #[inline(always)]
    pub fn from_bytes(b: &[u8; 12]) -> Option<Self> {
        if b[0] >> 6 != 2 {
            return None;
        }
        Some(Self {
            pt: b[1] & 0x7f,
            seq: u16::from_be_bytes([b[2], b[3]]),
            ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        })
    }

    /// RFC 3550 §5.1, §5.3.1: bytes of header before the payload, from the first byte
    /// (CSRC count, X bit) and, when X is set, the extension's length in 32-bit words (the
    /// 16 bits at offset `csrc_end() + 2`). A packet shorter than this lies about its
    /// header and is not counted.
    #[inline(always)]
    pub fn header_len(b0: u8, ext_words: u16) -> usize {
        let fixed = Self::csrc_end(b0);
        if b0 & 0x10 == 0 {
            fixed
        } else {
            fixed + 4 + 4 * usize::from(ext_words)
        }
    }

    /// Offset of the end of the CSRC list (where a header extension starts): 12 + 4 × CC.
    #[inline(always)]
    pub fn csrc_end(b0: u8) -> usize {
        12 + 4 * usize::from(b0 & 0x0f)
    }

    /// Whether the first byte announces a header extension (X bit).
    #[inline(always)]
    pub fn has_extension(b0: u8) -> bool {
        b0 & 0x10 != 0
    }

    /// RFC 5761 §4: payload types 64..=95 (with the marker bit, 192..=223 in the second byte)
    /// are RTCP on a multiplexed port.
    #[inline(always)]
    pub fn is_rtcp_mux(second_byte: u8) -> bool {
        (192..=223).contains(&second_byte)
    }
}

/// The stream's clock as the update needs it, precomputed by [`MediaValue::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Sixteenths of a timestamp unit per ns, × 2^32 (0: unknown clock rate).
    pub q4_per_ns_q32: u64,
    /// ns per sixteenth of a timestamp unit, × 256.
    pub ns_per_q4_q8: u64,
}

impl Timing {
    /// The timing of a stream whose clock runs at `clock_rate` Hz (0s when the rate is 0 or
    /// outside `MediaValue::MIN_CLOCK_RATE..=MediaValue::MAX_CLOCK_RATE`: unknown).
    pub const fn new(clock_rate: u32) -> Self {
        let known =
            clock_rate >= MediaValue::MIN_CLOCK_RATE && clock_rate <= MediaValue::MAX_CLOCK_RATE;
        if !known {
            return Self {
                q4_per_ns_q32: 0,
                ns_per_q4_q8: 0,
            };
        }
        let q4_rate = clock_rate as u64 * 16;
        Self {
            q4_per_ns_q32: ((q4_rate << 32) + 500_000_000) / 1_000_000_000,
            ns_per_q4_q8: 1_000_000_000 * 256 / q4_rate,
        }
    }

    /// `units` RTP timestamp units in ns (negative units give negative ns). Exact at
    /// 8, 16 and 32 kHz; at other rates the rounding of `ns_per_q4_q8` leaves a relative
    /// error below 10^-6 (under 4 ms an hour), far smaller than any clock's drift.
    #[inline(always)]
    pub fn units_to_ns(&self, units: i64) -> i64 {
        // ns per unit = ns_per_q4_q8 × 16 / 256. |units| stays far below 2^40 for any call
        // (2^40 units are 66 days at 192 kHz) and ns_per_q4_q8 below 2^21: no overflow.
        units.wrapping_mul(self.ns_per_q4_q8 as i64) >> 4
    }
}

/// What happened to one packet's statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Counted in an SSRC slot.
    Counted,
    /// Counted as a telephone event (kept out of the jitter).
    TelephoneEvent,
    /// No free SSRC slot: counted in the entry's overflow.
    Overflow,
}

impl MediaValue {
    /// Updates the entry with one RTP packet of `len` payload bytes arriving at `now_ns`.
    #[inline(always)]
    pub fn update(&mut self, f: &RtpFields, len: u32, now_ns: u64) -> Outcome {
        let timing = Timing {
            q4_per_ns_q32: self.q4_per_ns_q32,
            ns_per_q4_q8: self.ns_per_q4_q8,
        };
        let is_te = self.te_pt != 0xff && f.pt == self.te_pt;
        let slot = match self.slot_for(f.ssrc) {
            Some(s) => s,
            None => {
                self.ssrc_overflow = self.ssrc_overflow.wrapping_add(1);
                return Outcome::Overflow;
            }
        };
        slot.update(f, len, now_ns, &timing, is_te);
        if is_te {
            Outcome::TelephoneEvent
        } else {
            Outcome::Counted
        }
    }

    /// The slot of `ssrc`, claiming a free one for a new SSRC.
    #[inline(always)]
    fn slot_for(&mut self, ssrc: u32) -> Option<&mut RtpStream> {
        let mut free = SSRC_SLOTS;
        let mut found = SSRC_SLOTS;
        for (i, s) in self.slots.iter().enumerate() {
            if s.in_use != 0 && s.ssrc == ssrc {
                found = i;
                break;
            }
            if s.in_use == 0 && free == SSRC_SLOTS {
                free = i;
            }
        }
        if found < SSRC_SLOTS {
            return self.slots.get_mut(found);
        }
        let s = self.slots.get_mut(free)?;
        // Zeroed in place: a 200-byte temporary would not fit the eBPF stack. All-zero is
        // `RtpStream::EMPTY`.
        // SAFETY: `s` is a valid, exclusive reference to a plain-integer struct.
        unsafe { core::ptr::write_bytes(s as *mut RtpStream, 0, 1) };
        s.in_use = 1;
        s.ssrc = ssrc;
        Some(s)
    }
}

impl RtpStream {
    /// Extended highest sequence number received (RFC 3550 A.3).
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected (RFC 3550 A.3) from the first packet seen (not from the end of the
    /// probation, see the module doc); 0 before any packet.
    pub fn expected(&self) -> u32 {
        if self.received == 0 {
            return 0;
        }
        self.extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }

    /// Cumulative packets lost (RFC 3550 A.3): expected − received, negative with duplicates.
    pub fn lost(&self) -> i64 {
        i64::from(self.expected()) - i64::from(self.received)
    }

    #[inline(always)]
    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.seen_bits = 1;
    }

    /// RFC 3550 A.1 `update_seq` for every packet after a source's first: returns whether
    /// the packet is valid (counted in `received`).
    ///
    /// Unlike A.1, the probation only counts sequential packets towards validity: it neither
    /// moves `max_seq` nor leaves packets out of `received`, so the source's first packet
    /// stays the base (see the module doc).
    #[inline(always)]
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if udelta == 1 {
                self.probation -= 1;
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
            }
        }
        if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if udelta == 0 {
                if self.seen_bits & 1 != 0 {
                    self.duplicates = self.duplicates.wrapping_add(1);
                }
                self.seen_bits |= 1;
            } else {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
                }
                self.max_seq = seq;
                self.seen_bits = if udelta >= 64 {
                    1
                } else {
                    (self.seen_bits << udelta) | 1
                };
                if udelta > 1 {
                    let burst = usize::from(udelta - 1).min(LOSS_BURST_BUCKETS);
                    if let Some(b) = self.loss_bursts.get_mut(burst - 1) {
                        *b = b.wrapping_add(1);
                    }
                }
            }
        } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump: restart only when the next packet confirms it.
            if u32::from(seq) == self.bad_seq {
                self.init_seq(seq);
                self.restarts = self.restarts.wrapping_add(1);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
        } else {
            // Duplicate or reordered packet.
            let back = self.max_seq.wrapping_sub(seq);
            if back < 64 {
                let bit = 1u64 << back;
                if self.seen_bits & bit != 0 {
                    self.duplicates = self.duplicates.wrapping_add(1);
                }
                self.seen_bits |= bit;
            }
        }
        self.received = self.received.wrapping_add(1);
        true
    }

    /// Updates the slot with one packet (RFC 3550 A.1 and A.8).
    #[inline(always)]
    pub fn update(&mut self, f: &RtpFields, len: u32, now_ns: u64, t: &Timing, is_te: bool) {
        let duplicates_before = self.duplicates;
        if self.packets == 0 {
            // A new source: RFC 3550 A.1 init_seq, and this packet is the base and the first
            // of the `MIN_SEQUENTIAL` the probation wants.
            self.init_seq(f.seq);
            self.received = 1;
            self.probation = MIN_SEQUENTIAL - 1;
            self.first_ns = now_ns;
        } else {
            let gap = now_ns.saturating_sub(self.last_ns);
            if gap > self.max_gap_ns {
                self.max_gap_ns = gap;
            }
            self.update_seq(f.seq);
        }
        // The first packet is never a duplicate; `update_seq` counted this one if it is.
        let duplicate = self.duplicates != duplicates_before;
        self.packets = self.packets.wrapping_add(1);
        self.bytes = self.bytes.wrapping_add(u64::from(len));
        self.last_ns = now_ns;

        if is_te {
            self.te_packets = self.te_packets.wrapping_add(1);
            return;
        }
        self.pt = f.pt;
        if t.q4_per_ns_q32 == 0 {
            return;
        }
        if self.jit_last_ns != 0 {
            // D(i-1, i) = (Rj - Ri) - (Sj - Si), in timestamp units × 16.
            let dt_ns = now_ns
                .saturating_sub(self.jit_last_ns)
                .min(MAX_ARRIVAL_DELTA_NS);
            let arrival_q4 = (dt_ns * t.q4_per_ns_q32 + (1 << 31)) >> 32;
            let ts_delta = f.ts.wrapping_sub(self.last_ts) as i32;
            let d_q4 = arrival_q4 as i64 - i64::from(ts_delta) * 16;
            let abs_d_q4 = d_q4.unsigned_abs();
            // J += (|D| - J) / 16, with J × 256 and D × 16.
            self.jitter_q8 = self
                .jitter_q8
                .wrapping_add(abs_d_q4)
                .wrapping_sub((self.jitter_q8 + 8) >> 4);
            if self.jitter_q8 > self.max_jitter_q8 {
                self.max_jitter_q8 = self.jitter_q8;
            }
            self.jitter_sum_q8 = self.jitter_sum_q8.wrapping_add(self.jitter_q8);
            self.jitter_samples = self.jitter_samples.wrapping_add(1);
            let d_ns = (abs_d_q4 * t.ns_per_q4_q8) >> 8;
            let bucket = delay_bucket(d_ns);
            if let Some(b) = self.delay_hist.get_mut(bucket) {
                *b = b.wrapping_add(1);
            }
            // Media time runs on by the same signed step, so it extends past the wrap.
            self.media_units = self.media_units.wrapping_add(i64::from(ts_delta));
            if !duplicate {
                let transit = (now_ns as i64).wrapping_sub(t.units_to_ns(self.media_units));
                let rel = self.anchor.observe(now_ns, transit);
                if let Some(b) = self.late_hist.get_mut(late_bucket(rel)) {
                    *b = b.wrapping_add(1);
                }
            }
        } else {
            // First jitter sample: the RFC's J starts at 0, counted so the mean matches.
            self.jitter_samples = self.jitter_samples.wrapping_add(1);
            // Media time starts here; the packet opens the anchor's first epoch.
            self.media_units = 0;
            self.anchor = PlayoutAnchor::starting(now_ns, now_ns as i64);
            if let Some(b) = self.late_hist.get_mut(0) {
                *b = b.wrapping_add(1);
            }
        }
        self.jit_last_ns = now_ns;
        self.last_ts = f.ts;
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter_units(&self) -> f64 {
        self.jitter_q8 as f64 / 256.0
    }
}

impl PlayoutAnchor {
    /// An anchor whose first epoch begins with a packet of transit `transit_ns` arriving at
    /// `now_ns`.
    #[inline(always)]
    pub fn starting(now_ns: u64, transit_ns: i64) -> Self {
        Self {
            epoch_ns: now_ns,
            cur_ns: transit_ns,
            prev_ns: i64::MAX,
        }
    }

    /// Takes in a packet of transit `transit_ns` arriving at `now_ns` (after the one given
    /// to [`PlayoutAnchor::starting`]) and returns its playout delay: how far, ns, it is
    /// behind the anchor (never negative: the anchor includes the packet).
    #[inline(always)]
    pub fn observe(&mut self, now_ns: u64, transit_ns: i64) -> u64 {
        let since = now_ns.saturating_sub(self.epoch_ns);
        if since >= ANCHOR_EPOCH_NS {
            self.prev_ns = if since >= 2 * ANCHOR_EPOCH_NS {
                i64::MAX
            } else {
                self.cur_ns
            };
            self.cur_ns = transit_ns;
            self.epoch_ns = now_ns;
        } else if transit_ns < self.cur_ns {
            self.cur_ns = transit_ns;
        }
        let anchor = if self.prev_ns < self.cur_ns {
            self.prev_ns
        } else {
            self.cur_ns
        };
        transit_ns.saturating_sub(anchor).max(0) as u64
    }
}

/// Index of the playout-delay bucket for a packet `rel_ns` behind the anchor: the first
/// whose bound is ≥ it (bounds inclusive, see [`LATE_BUCKETS_MS`]).
#[inline(always)]
pub fn late_bucket(rel_ns: u64) -> usize {
    let mut i = 0;
    while i < LATE_BUCKETS_MS.len() {
        if let Some(&b) = LATE_BUCKETS_MS.get(i) {
            if rel_ns <= u64::from(b) * 1_000_000 {
                return i;
            }
        }
        i += 1;
    }
    LATE_BUCKET_COUNT - 1
}

/// Index of the delay-variation bucket for `d_ns`.
#[inline(always)]
fn delay_bucket(d_ns: u64) -> usize {
    let mut i = 0;
    while i < DELAY_BUCKETS_MS.len() {
        if let Some(&b) = DELAY_BUCKETS_MS.get(i) {
            if d_ns < u64::from(b) * 1_000_000 {
                return i;
            }
        }
        i += 1;
    }
    DELAY_BUCKET_COUNT - 1
}

#[cfg(any(test, feature = "reference"))]
pub mod reference;
#[cfg(test)]
mod tests;
