//! Anonymous daily aggregates: what retention keeps of the CDRs it deletes.
//!
//! One row per (day, agent, disposition, codec) with call counts, summed durations and
//! two histograms: the worst MOS of each call (ITU-T P.800 MOS scale, E-model estimate of
//! ITU-T G.107) and the worst loss of each call (RFC 3550 §6.4.1 fraction lost, in percent).
//! No identifier of a party reaches an aggregate, so it may be kept for long-term
//! reporting after the CDRs are gone. Both backends fold with [`Folder`], so their
//! aggregates agree bucket for bucket.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;

use super::day_of;

/// Upper edges of the MOS buckets 1..: bucket 0 counts calls without a MOS, bucket `i`
/// (1..=6) calls whose worst MOS is below `MOS_EDGES[i-1]` (and at or above the previous
/// edge), bucket 7 calls at or above 4.3 (the narrowband ceiling region, "very satisfied").
pub const MOS_EDGES: [f64; 6] = [2.0, 2.5, 3.0, 3.5, 4.0, 4.3];
/// Number of MOS buckets.
pub const MOS_BUCKETS: usize = MOS_EDGES.len() + 2;
/// Upper edges of the loss buckets 2..: bucket 0 counts calls without media, bucket 1
/// calls with no loss, bucket `i` (2..=5) calls whose worst loss is below
/// `LOSS_EDGES[i-2]` percent, bucket 6 calls at or above 10 %.
pub const LOSS_EDGES: [f64; 4] = [1.0, 2.0, 5.0, 10.0];
/// Number of loss buckets.
pub const LOSS_BUCKETS: usize = LOSS_EDGES.len() + 3;

/// The grouping of an aggregate row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AggregateKey {
    /// Days since the Unix epoch (UTC) of the calls' start.
    pub day: u64,
    /// Agent that recorded the calls.
    pub agent_id: String,
    /// `collector.v1.Disposition` value.
    pub disposition: i32,
    /// Codec name (first negotiated), empty when none was seen.
    pub codec: String,
}

/// One aggregate row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyAggregate {
    /// The grouping.
    pub key: AggregateKey,
    /// Calls.
    pub calls: u64,
    /// Sum of the calls' durations, ms.
    pub duration_ms: u64,
    /// Sum of the calls' billable durations, ms.
    pub billable_ms: u64,
    /// Worst-MOS histogram (see [`MOS_EDGES`]).
    pub mos_hist: [u64; MOS_BUCKETS],
    /// Worst-loss histogram (see [`LOSS_EDGES`]).
    pub loss_hist: [u64; LOSS_BUCKETS],
}

impl DailyAggregate {
    /// An empty row for `key`.
    pub fn new(key: AggregateKey) -> Self {
        Self {
            key,
            calls: 0,
            duration_ms: 0,
            billable_ms: 0,
            mos_hist: [0; MOS_BUCKETS],
            loss_hist: [0; LOSS_BUCKETS],
        }
    }

    /// Adds `other`'s counts (same key) to this row.
    pub fn merge(&mut self, other: &DailyAggregate) {
        self.calls = self.calls.saturating_add(other.calls);
        self.duration_ms = self.duration_ms.saturating_add(other.duration_ms);
        self.billable_ms = self.billable_ms.saturating_add(other.billable_ms);
        for (a, b) in self.mos_hist.iter_mut().zip(other.mos_hist) {
            *a = a.saturating_add(b);
        }
        for (a, b) in self.loss_hist.iter_mut().zip(other.loss_hist) {
            *a = a.saturating_add(b);
        }
    }
}

/// The MOS bucket of a call's worst MOS (`None` = no MOS computed).
pub fn mos_bucket(mos: Option<f64>) -> usize {
    match mos {
        None => 0,
        Some(m) => 1 + MOS_EDGES.iter().take_while(|edge| m >= **edge).count(),
    }
}

/// The loss bucket of a call's worst loss in percent (`None` = no media).
pub fn loss_bucket(loss_pct: Option<f64>) -> usize {
    match loss_pct {
        None => 0,
        Some(l) if l <= 0.0 => 1,
        Some(l) => 2 + LOSS_EDGES.iter().take_while(|edge| l >= **edge).count(),
    }
}

/// The fields of one stored CDR that aggregation reads.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldRow {
    /// Agent.
    pub agent_id: String,
    /// Start, Unix ms.
    pub start_time_ms: u64,
    /// Disposition value.
    pub disposition: i32,
    /// Codec.
    pub codec: String,
    /// Duration, ms.
    pub duration_ms: u64,
    /// Billable duration, ms.
    pub billable_ms: u64,
    /// Worst MOS.
    pub min_mos: Option<f64>,
    /// Worst loss, percent.
    pub max_loss_pct: Option<f64>,
    /// Interim records are snapshots of a call whose final record follows: counting them
    /// would count the call twice, so they are deleted without being folded.
    pub interim: bool,
}

/// Accumulates rows into aggregates, keyed and ordered.
#[derive(Debug, Default)]
pub struct Folder {
    rows: BTreeMap<AggregateKey, DailyAggregate>,
    seen: u64,
    folded: u64,
}

impl Folder {
    /// Adds one CDR.
    pub fn add(&mut self, r: FoldRow) {
        self.seen += 1;
        if r.interim {
            return;
        }
        self.folded += 1;
        let key = AggregateKey {
            day: day_of(r.start_time_ms),
            agent_id: r.agent_id,
            disposition: r.disposition,
            codec: r.codec,
        };
        let row = self
            .rows
            .entry(key.clone())
            .or_insert_with(|| DailyAggregate::new(key));
        row.calls += 1;
        row.duration_ms = row.duration_ms.saturating_add(r.duration_ms);
        row.billable_ms = row.billable_ms.saturating_add(r.billable_ms);
        if let Some(b) = row.mos_hist.get_mut(mos_bucket(r.min_mos)) {
            *b += 1;
        }
        if let Some(b) = row.loss_hist.get_mut(loss_bucket(r.max_loss_pct)) {
            *b += 1;
        }
    }

    /// CDRs added (interim ones included).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Final CDRs folded.
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// The aggregates, in key order.
    pub fn into_rows(self) -> impl Iterator<Item = DailyAggregate> {
        self.rows.into_values()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_documented_edges() {
        // Edges are inclusive below: a value equal to an edge goes to the next bucket.
        let mos: Vec<usize> = [
            None,
            Some(1.0),
            Some(1.99),
            Some(2.0),
            Some(3.49),
            Some(3.5),
        ]
        .into_iter()
        .chain([Some(4.0), Some(4.29), Some(4.3), Some(4.5)])
        .map(mos_bucket)
        .collect();
        assert_eq!(mos, [0, 1, 1, 2, 4, 5, 6, 6, 7, 7]);
        let loss: Vec<usize> = [None, Some(0.0), Some(0.01), Some(1.0), Some(4.99)]
            .into_iter()
            .chain([Some(5.0), Some(9.99), Some(10.0), Some(100.0)])
            .map(loss_bucket)
            .collect();
        assert_eq!(loss, [0, 1, 2, 3, 4, 5, 5, 6, 6]);
    }

    #[test]
    fn interim_records_are_not_counted() {
        let row = |day: u64, interim: bool| FoldRow {
            agent_id: "A".into(),
            start_time_ms: day * 86_400_000 + 5,
            disposition: 1,
            codec: "PCMU".into(),
            duration_ms: 10,
            billable_ms: 7,
            min_mos: Some(4.1),
            max_loss_pct: Some(0.0),
            interim,
        };
        let mut f = Folder::default();
        f.add(row(3, false));
        f.add(row(3, true));
        f.add(row(3, false));
        f.add(row(4, false));
        assert_eq!((f.seen(), f.folded()), (4, 3));
        let rows: Vec<DailyAggregate> = f.into_rows().collect();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].key.day, rows[0].calls), (3, 2));
        assert_eq!((rows[0].duration_ms, rows[0].billable_ms), (20, 14));
        assert_eq!(rows[0].mos_hist[6], 2);
        assert_eq!(rows[0].loss_hist[1], 2);
        assert_eq!((rows[1].key.day, rows[1].calls), (4, 1));
    }
}
