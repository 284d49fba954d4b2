//! The worst moment of a stream, not only its average: the stream's cumulative RFC 3550
//! statistics (`collector_common::media::RtpStream`, read from the kernel or the replay's
//! emulation at every statistics poll) cut into 10-second intervals, each scored alone by the
//! same E-model as the whole stream.
//!
//! An interval is the difference between the counters at two polls: packets, the extended
//! sequence range (so losses, RFC 3550 A.3), the jitter sum, the loss-run and delay
//! histograms. Its boundaries are poll times (the agent and replay poll every second), so an
//! interval is 10 s to within one poll; the first starts at the stream's first packet. The
//! last, still open when the record is made, counts when it covers at least half an interval
//! and holds packets; an interval without packets (hold, silence suppression) is not scored.
//! A sequence restart (RFC 3550 A.1: a large jump) drops the interval it happens in.
#![deny(clippy::indexing_slicing, clippy::panic)]

use collector_common::media::RtpStream;

/// Length of an interval.
pub const INTERVAL_NS: u64 = 10_000_000_000;
/// The open interval at the end of a stream counts from this length on.
pub const MIN_PARTIAL_NS: u64 = INTERVAL_NS / 2;
/// Intervals kept in order per stream (one hour); the minimum and the mean cover all.
pub const MAX_KEPT: usize = 360;

/// One scored interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// Start, ns since the Unix epoch.
    pub start_ns: u64,
    /// Length, ns.
    pub duration_ns: u64,
    /// Packets received in it.
    pub packets: u64,
    /// Packets expected in it.
    pub expected: u64,
    /// Packets lost in it (negative with duplicates).
    pub lost: i64,
    /// Lost / expected, percent (negative loss counts as 0).
    pub loss_pct: f64,
    /// Mean interarrival jitter of its packets, ms.
    pub mean_jitter_ms: f64,
    /// E-model MOS (0: not computed).
    pub mos: f64,
}

/// What a scorer says of one interval's statistics: (MOS, mean jitter in ms); MOS 0 when
/// the codec has no model.
pub type Score<'a> = &'a dyn Fn(&RtpStream) -> (f64, f64);

/// The intervals of one stream so far.
#[derive(Clone, Debug)]
pub struct IntervalTrack {
    /// The counters when the open interval began (empty before the first).
    base: RtpStream,
    start_ns: u64,
    kept: Vec<Interval>,
    /// Intervals scored with a MOS (all of them, also past [`MAX_KEPT`]).
    scored: u32,
    mos_sum: f64,
    /// Lowest MOS and the start of its interval.
    min: Option<(f64, u64)>,
}

/// The intervals of a stream as a record carries them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Lowest interval MOS and the start of its interval (ns).
    pub min: Option<(f64, u64)>,
    /// Mean of the intervals' MOS.
    pub mean_mos: Option<f64>,
    /// The first [`MAX_KEPT`] intervals, in order.
    pub intervals: Vec<Interval>,
}

impl IntervalTrack {
    /// A stream whose first packet arrived at `first_ns`.
    pub fn new(first_ns: u64) -> Self {
        Self {
            base: RtpStream::EMPTY,
            start_ns: first_ns,
            kept: Vec::new(),
            scored: 0,
            mos_sum: 0.0,
            min: None,
        }
    }

    /// Whether a read at `now_ns` closes the open interval.
    pub fn due(&self, now_ns: u64) -> bool {
        now_ns >= self.start_ns.saturating_add(INTERVAL_NS)
    }

    /// The counters `cur` read at `now_ns`: closes the open interval once it is an interval
    /// long and opens the next.
    pub fn observe(&mut self, now_ns: u64, cur: &RtpStream, score: Score<'_>) {
        if !self.due(now_ns) {
            return;
        }
        self.close(now_ns, cur, score);
        self.base = *cur;
        self.start_ns = now_ns;
    }

    /// The minimum and the mean of the closed intervals, without the list (cheap enough
    /// for every statistics poll).
    pub fn closed(&self) -> Summary {
        Summary {
            min: self.min,
            mean_mos: (self.scored > 0).then(|| self.mos_sum / f64::from(self.scored)),
            intervals: Vec::new(),
        }
    }

    /// The intervals up to `now_ns`, with `cur` the stream's last counters: the closed ones,
    /// and the open one when long enough.
    pub fn summary(&self, now_ns: u64, cur: &RtpStream, score: Score<'_>) -> Summary {
        let mut t = self.clone();
        if now_ns.saturating_sub(t.start_ns) >= MIN_PARTIAL_NS {
            t.close(now_ns, cur, score);
        }
        Summary {
            intervals: std::mem::take(&mut t.kept),
            ..t.closed()
        }
    }

    fn close(&mut self, now_ns: u64, cur: &RtpStream, score: Score<'_>) {
        let Some(d) = delta(&self.base, cur) else {
            return;
        };
        if d.received == 0 {
            return;
        }
        let expected = u64::from(d.expected());
        let lost = d.lost();
        let loss_pct = if expected == 0 {
            0.0
        } else {
            (lost.max(0) as f64 / expected as f64 * 100.0).clamp(0.0, 100.0)
        };
        let (mos, mean_jitter_ms) = score(&d);
        let iv = Interval {
            start_ns: self.start_ns,
            duration_ns: now_ns.saturating_sub(self.start_ns),
            packets: d.packets,
            expected,
            lost,
            loss_pct,
            mean_jitter_ms,
            mos,
        };
        if mos > 0.0 {
            self.scored = self.scored.saturating_add(1);
            self.mos_sum += mos;
            if self.min.is_none_or(|(m, _)| mos < m) {
                self.min = Some((mos, iv.start_ns));
            }
        }
        if self.kept.len() < MAX_KEPT {
            self.kept.push(iv);
        }
    }
}

/// The statistics of the packets between `base` and `cur` (two reads of the same stream),
/// as a stream of their own; `None` when the counters went back (the slot was reused) or
/// the sequence restarted in between.
pub fn delta(base: &RtpStream, cur: &RtpStream) -> Option<RtpStream> {
    if base.received == 0 {
        return Some(*cur);
    }
    if cur.ssrc != base.ssrc
        || cur.restarts != base.restarts
        || cur.received < base.received
        || cur.packets < base.packets
        || cur.jitter_samples < base.jitter_samples
    {
        return None;
    }
    let mut d = *cur;
    // Expected = cur's extended max − base's: the range starts past base's highest.
    d.base_seq = base.extended_max().wrapping_add(1);
    d.received = cur.received - base.received;
    d.packets = cur.packets - base.packets;
    d.bytes = cur.bytes.saturating_sub(base.bytes);
    d.duplicates = cur.duplicates.saturating_sub(base.duplicates);
    d.te_packets = cur.te_packets.saturating_sub(base.te_packets);
    // Every jitter sample of an interval is a measurement; the stream's first (the
    // estimator's initial 0) is the one `quality::mean_jitter_ms` leaves out, so one is
    // added for the same formula to hold.
    d.jitter_samples = cur.jitter_samples - base.jitter_samples + 1;
    d.jitter_sum_q8 = cur.jitter_sum_q8.saturating_sub(base.jitter_sum_q8);
    d.first_ns = base.last_ns;
    // A larger maximum gap than before happened in this interval; otherwise the interval's
    // own is not known (at most the earlier maximum).
    if cur.max_gap_ns <= base.max_gap_ns {
        d.max_gap_ns = 0;
    }
    for (x, b) in d.delay_hist.iter_mut().zip(base.delay_hist) {
        *x = x.saturating_sub(b);
    }
    for (x, b) in d.late_hist.iter_mut().zip(base.late_hist) {
        *x = x.saturating_sub(b);
    }
    for (x, b) in d.loss_bursts.iter_mut().zip(base.loss_bursts) {
        *x = x.saturating_sub(b);
    }
    Some(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use collector_common::{rtp::RtpFields, MediaValue};

    use super::*;
    use crate::media::quality::{self, QualityInput};

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    /// PCMU at 20 ms a packet; the E-model MOS of the adaptive buffer, as CDRs score.
    fn score(s: &RtpStream) -> (f64, f64) {
        let q = quality::assess(&QualityInput::new(s, 8000, "PCMU"));
        let mos = q
            .buffers
            .last()
            .and_then(|b| b.emodel.as_ref())
            .map_or(0.0, |e| e.mos);
        (mos, q.jitter_mean_ms.unwrap_or(0.0))
    }

    /// A 30 s PCMU stream polled every second; `drop(i)` loses packet `i`.
    fn run(drop: impl Fn(u32) -> bool) -> (RtpStream, Summary) {
        let mut v = MediaValue::new(1, 8000, 0xff, 0);
        let mut t: Option<IntervalTrack> = None;
        let mut next_poll = T0 + S;
        for i in 0..1500u32 {
            let at = T0 + u64::from(i) * 20_000_000;
            while at >= next_poll {
                let s = v.slots[0];
                if s.received > 0 {
                    t.get_or_insert_with(|| IntervalTrack::new(s.first_ns))
                        .observe(next_poll, &s, &score);
                }
                next_poll += S;
            }
            if drop(i) {
                continue;
            }
            let f = RtpFields {
                pt: 0,
                seq: 40_000u16.wrapping_add(i as u16),
                ts: i * 160,
                ssrc: 0x1234,
            };
            v.update(&f, 172, at);
        }
        let s = v.slots[0];
        let end = T0 + 30 * S;
        (s, t.unwrap().summary(end, &s, &score))
    }

    #[test]
    fn loss_in_one_window_is_the_minimum_and_clean_windows_score_clean() {
        let (_, clean) = run(|_| false);
        // Packets 600..1100 are 12 s .. 22 s: one in ten of those in 12..18 s is lost, so all
        // 30 losses fall in the interval that starts at 10 s.
        let lossy_packet = |i: u32| (600..900).contains(&i) && i.is_multiple_of(10);
        let (s, lossy) = run(lossy_packet);
        assert_eq!(s.lost(), 30);
        assert_eq!(lossy.intervals.len(), 3);
        let losses: Vec<i64> = lossy.intervals.iter().map(|i| i.lost).collect();
        assert_eq!(losses, [0, 30, 0]);
        assert_eq!(lossy.intervals[1].expected, 500);
        let clean_mos = clean.intervals[0].mos;
        assert!(clean_mos > 4.0, "{clean_mos}");
        for iv in [&lossy.intervals[0], &lossy.intervals[2]] {
            assert!((iv.mos - clean_mos).abs() < 1e-9, "{iv:?} vs {clean_mos}");
        }
        let (min, start) = lossy.min.unwrap();
        assert_eq!(start, lossy.intervals[1].start_ns);
        assert!((T0 + 10 * S..T0 + 11 * S).contains(&start));
        let mean = lossy.mean_mos.unwrap();
        assert!(min < mean - 0.2, "min {min} mean {mean}");
        // The whole stream's 1 % loss scores higher than the interval's 6 %.
        let whole = score(&s).0;
        assert!(
            min < whole && whole < clean_mos,
            "{min} {whole} {clean_mos}"
        );
    }

    #[test]
    fn intervals_partition_the_stream() {
        let (s, sum) = run(|i| i % 97 == 5);
        let packets: u64 = sum.intervals.iter().map(|i| i.packets).sum();
        let expected: u64 = sum.intervals.iter().map(|i| i.expected).sum();
        let lost: i64 = sum.intervals.iter().map(|i| i.lost).sum();
        assert_eq!(packets, s.packets);
        assert_eq!(expected, u64::from(s.expected()));
        assert_eq!(lost, s.lost());
        let jitter = quality::mean_jitter_ms(&s, 8000).unwrap();
        for iv in &sum.intervals {
            assert!((iv.mean_jitter_ms - jitter).abs() < 0.01, "{iv:?}");
        }
    }

    #[test]
    fn a_short_last_piece_and_a_silent_interval_are_not_scored() {
        let mut v = MediaValue::new(1, 8000, 0xff, 0);
        for i in 0..50u32 {
            let f = RtpFields {
                pt: 0,
                seq: i as u16,
                ts: i * 160,
                ssrc: 7,
            };
            v.update(&f, 172, T0 + u64::from(i) * 20_000_000);
        }
        let s = v.slots[0];
        let mut t = IntervalTrack::new(s.first_ns);
        // 1 s of packets, then silence: the first interval holds them, the second none.
        t.observe(T0 + 10 * S, &s, &score);
        t.observe(T0 + 20 * S, &s, &score);
        let sum = t.summary(T0 + 24 * S, &s, &score);
        assert_eq!(sum.intervals.len(), 1);
        assert_eq!(sum.intervals[0].packets, 50);
        // 4 s open at the end is under half an interval: not counted even with packets.
        let short = IntervalTrack::new(s.first_ns).summary(T0 + 4 * S, &s, &score);
        assert_eq!(short, Summary::default());
    }

    #[test]
    fn counters_that_go_back_drop_the_interval() {
        let mut a = RtpStream::EMPTY;
        a.received = 100;
        a.packets = 100;
        a.ssrc = 1;
        let mut b = a;
        b.received = 50;
        assert!(delta(&a, &b).is_none());
        b = a;
        b.restarts = 1;
        assert!(delta(&a, &b).is_none());
        b = a;
        b.ssrc = 2;
        assert!(delta(&a, &b).is_none());
    }
}
