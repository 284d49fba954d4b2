//! Billing in the central collector (issue 24): rate tables imported into the store, each
//! answered CDR rated at ingest, and the usage report. Every expected number is computed by
//! hand below from `testdata/billing/rates.csv` and the durations chosen (increments that
//! matter), never from the code's output; stored columns are read back with direct SQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use crate::support::Backend;
use collector::server::{
    retention::RetentionPolicy,
    store::billing::{table_version, usage_report},
    ServeOptions,
};
use collector_proto::v1::{
    admin_client::AdminClient, query_client::QueryClient, Cdr, CdrRecord, DestinationUsage,
    Disposition, ImportRatesRequest, RerateRequest, UnratedUsage, UsageReportRequest,
};

/// The rate table: +44 12/min 60/60; +4420 London 10/min 60/60; +447700 mobile 30/min 30/6,
/// minimum 30 s, fee 5; +4930 Berlin 8/min 1/1 (all EUR, from 2026-01-01).
const RATES: &str = include_str!("../../../testdata/billing/rates.csv");
/// 2026-11-10T12:00:00Z.
const NOV_10: u64 = 1_794_312_000_000;
/// 2026-11-01T00:00:00Z and 2026-12-01T00:00:00Z: the month of November 2026.
const NOV: u64 = 1_793_491_200_000;
const DEC: u64 = 1_796_083_200_000;

fn call(id: &str, prefix: &str, disposition: Disposition, billable_ms: u64) -> Cdr {
    Cdr {
        agent_id: "A".into(),
        cdr_id: id.into(),
        call_id: format!("cid_{id}"),
        start_time_ms: NOV_10,
        end_time_ms: NOV_10 + billable_ms + 2_000,
        duration_ms: billable_ms + 2_000,
        billable_ms,
        disposition: disposition as i32,
        final_code: if disposition == Disposition::Answered {
            200
        } else {
            486
        },
        destination_prefix: prefix.into(),
        ..Default::default()
    }
}

use Disposition::{Answered, Busy, NoAnswer};

/// The calls of the month and what each costs, by hand:
/// - London (+4420, 10/min, 60/60): l1 61 s -> 120 s -> 120*10/60 = 20; l2 59.001 s -> 60 s
///   -> 10; l3 busy. London: 3 calls, 2 answered, 120 001 ms, 180 s, cost 30.
/// - mobile (+447700, 30/min, 30/6, min 30 s, fee 5): m1 5 s -> min 30 s -> 30 s ->
///   5 + 30*30/60 = 20; m2 31 s -> 30 + 6 = 36 s -> 5 + 36*30/60 = 23. Mobile: 2 calls,
///   2 answered, 36 000 ms, 66 s, cost 43.
/// - Berlin (+4930, 8/min, 1/1): b1 45.2 s -> 46 s -> ceil(46*8/60) = ceil(6.13) = 7;
///   b2 no answer. Berlin: 2 calls, 1 answered, 45 200 ms, 46 s, cost 7.
/// - Unrated: f1 to +33 (no row) 90 s; n1 without prefix 10 s: listed, never free.
/// - Outside the report: d1 (London, 1 December) and an interim record.
fn month() -> Vec<Cdr> {
    let mut dec = call("d1", "+4420", Answered, 600_000);
    dec.start_time_ms = DEC + 3_600_000;
    let mut interim = call("i1", "+4420", Answered, 30_000);
    interim.interim = true;
    interim.interim_seq = 1;
    vec![
        call("l1", "+4420", Answered, 61_000),
        call("l2", "+4420", Answered, 59_001),
        call("l3", "+4420", Busy, 0),
        call("m1", "+447700", Answered, 5_000),
        call("m2", "+447700", Answered, 31_000),
        call("b1", "+4930", Answered, 45_200),
        call("b2", "+4930", NoAnswer, 0),
        call("f1", "+33", Answered, 90_000),
        call("n1", "", Answered, 10_000),
        dec,
        interim,
    ]
}

fn records(cdrs: Vec<Cdr>) -> Vec<CdrRecord> {
    cdrs.into_iter()
        .zip(1..)
        .map(|(c, s)| CdrRecord {
            sequence: s,
            cdr: Some(c),
        })
        .collect()
}

fn dest(
    name: &str,
    (calls, answered, answered_ms): (u64, u64, u64),
    billable_secs: u64,
    cost: u64,
) -> DestinationUsage {
    DestinationUsage {
        destination: name.into(),
        currency: "EUR".into(),
        calls,
        answered,
        answered_ms,
        billable_secs,
        cost,
    }
}

/// The hand-computed report of [`month`].
fn expected() -> (Vec<DestinationUsage>, Vec<UnratedUsage>) {
    (
        vec![
            dest("Germany, Berlin", (2, 1, 45_200), 46, 7),
            dest("United Kingdom, London", (3, 2, 120_001), 180, 30),
            dest("United Kingdom, mobile", (2, 2, 36_000), 66, 43),
        ],
        vec![
            UnratedUsage {
                destination_prefix: String::new(),
                calls: 1,
                answered_ms: 10_000,
            },
            UnratedUsage {
                destination_prefix: "+33".into(),
                calls: 1,
                answered_ms: 90_000,
            },
        ],
    )
}

async fn answered_calls_are_rated_at_ingest_and_reported(b: Backend) {
    let s = b.open().await;
    let version = table_version(RATES);
    assert!(s
        .store_rates("default", &version, RATES, NOV_10)
        .await
        .unwrap());
    // The same version again is not a new one; every version is kept.
    assert!(!s
        .store_rates("default", &version, RATES, NOV_10 + 1)
        .await
        .unwrap());
    let out = s.ingest("A", records(month())).await.unwrap();
    assert_eq!(out.unrated, 2, "f1 and n1");

    let rows = b
        .select(
            "SELECT cdr_id, rating, destination, rated_prefix, billable_secs, cost, currency,
                rate_version
             FROM cdrs WHERE cdr_id IN ('l1', 'm1', 'm2', 'b1', 'b2', 'f1') ORDER BY cdr_id",
        )
        .await;
    let row = |id: &str, rating: &str, dest: &str, prefix: &str, secs: &str, cost: &str| {
        let rated = !dest.is_empty();
        vec![
            id.to_string(),
            rating.to_string(),
            dest.to_string(),
            prefix.to_string(),
            secs.to_string(),
            cost.to_string(),
            if rated { "EUR" } else { "" }.to_string(),
            if rated { version.as_str() } else { "" }.to_string(),
        ]
    };
    assert_eq!(
        rows,
        vec![
            row("b1", "1", "Germany, Berlin", "+4930", "46", "7"),
            // Unanswered: its destination is known (for ASR), nothing is billed.
            row("b2", "0", "Germany, Berlin", "+4930", "0", "0"),
            // Unrated: marked 2, not priced.
            row("f1", "2", "", "", "0", "0"),
            row("l1", "1", "United Kingdom, London", "+4420", "120", "20"),
            row("m1", "1", "United Kingdom, mobile", "+447700", "30", "20"),
            row("m2", "1", "United Kingdom, mobile", "+447700", "36", "23"),
        ]
    );

    let report = usage_report(&s.usage("default", NOV, DEC).await.unwrap());
    assert_eq!((report.destinations, report.unrated), expected());
    // Another tenant has no CDRs yet (every CDR is the default tenant's for now).
    let other = usage_report(&s.usage("acme", NOV, DEC).await.unwrap());
    assert!(other.destinations.is_empty() && other.unrated.is_empty());
}

async fn without_a_table_answered_calls_are_unrated(b: Backend) {
    let s = b.open().await;
    let out = s
        .ingest("A", records(vec![call("l1", "+4420", Answered, 61_000)]))
        .await
        .unwrap();
    assert_eq!(out.unrated, 1);
    let report = usage_report(&s.usage("default", NOV, DEC).await.unwrap());
    assert!(report.destinations.is_empty(), "never listed as free");
    assert_eq!(
        report.unrated,
        vec![UnratedUsage {
            destination_prefix: "+4420".into(),
            calls: 1,
            answered_ms: 61_000,
        }]
    );
}

both_backends!(
    answered_calls_are_rated_at_ingest_and_reported,
    without_a_table_answered_calls_are_unrated,
);

/// Through the gRPC services (SQLite, in process): `Admin.ImportRates` validates (the error
/// names the line) and stores; `Query.Usage` serves the hand-computed report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_import_and_usage_report_over_grpc() {
    let b = Backend::sqlite();
    let store = b.open().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let s = Arc::clone(&store);
    let opts = ServeOptions {
        token_secret: None,
        tls: None,
        retention: RetentionPolicy::default(),
    };
    let task = tokio::spawn(async move {
        collector::server::serve(listener, s, opts, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel.clone());
    let mut query = QueryClient::new(channel);

    let bad = RATES.replace(
        "+4930,\"Germany, Berlin\",8,",
        "+4930,\"Germany, Berlin\",-8,",
    );
    let err = admin
        .import_rates(ImportRatesRequest {
            tenant: String::new(),
            csv: bad,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("line 9"), "{}", err.message());

    let bad_tenant = admin
        .import_rates(ImportRatesRequest {
            tenant: "no spaces".into(),
            csv: RATES.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_tenant.code(), tonic::Code::InvalidArgument);

    let ok = admin
        .import_rates(ImportRatesRequest {
            tenant: String::new(),
            csv: RATES.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (ok.version, ok.rows, ok.new_version),
        (table_version(RATES), 4, true)
    );

    store.ingest("A", records(month())).await.unwrap();
    let report = query
        .usage(UsageReportRequest {
            tenant: String::new(),
            from_ms: NOV,
            to_ms: DEC,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((report.destinations, report.unrated), expected());

    // Re-rating with the table the CDRs were rated with changes nothing; f1 and n1 stay
    // unrated. A bad tenant is refused.
    let rerate = admin
        .rerate(RerateRequest {
            tenant: String::new(),
            since_ms: NOV,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (rerate.version, rerate.cdrs, rerate.changed, rerate.unrated),
        (table_version(RATES), 10, 0, 2)
    );
    let refused = admin
        .rerate(RerateRequest {
            tenant: "a b".into(),
            since_ms: NOV,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let _ = stop.send(());
    task.await.unwrap();
}

/// 2026-11-20T00:00:00Z.
const NOV_20: u64 = 1_795_132_800_000;

/// Usage reports outlive the CDRs: retention folds the final CDRs it deletes into the daily
/// usage aggregates, and the month's report is still the hand-computed one of [`expected`].
async fn usage_reports_outlive_retention(b: Backend) {
    let s = b.open().await;
    s.store_rates("default", &table_version(RATES), RATES, NOV_10)
        .await
        .unwrap();
    s.ingest("A", records(month())).await.unwrap();
    let run = s.retain(DEC, DEC).await.unwrap().unwrap();
    assert_eq!(run.deleted, 10, "every November record, the interim too");
    let left = b.select("SELECT cdr_id FROM cdrs ORDER BY cdr_id").await;
    assert_eq!(left, vec![vec!["d1".to_string()]]);
    let report = usage_report(&s.usage("default", NOV, DEC).await.unwrap());
    assert_eq!((report.destinations, report.unrated), expected());
    // A second run folds nothing twice.
    s.retain(DEC, DEC + 1).await.unwrap().unwrap();
    let report = usage_report(&s.usage("default", NOV, DEC).await.unwrap());
    assert_eq!((report.destinations, report.unrated), expected());
    // December's call is still stored and reported from its CDR: London 600 s -> 100.
    let dec = usage_report(
        &s.usage("default", DEC, DEC + 31 * 86_400_000)
            .await
            .unwrap(),
    );
    assert_eq!(
        dec.destinations,
        vec![dest("United Kingdom, London", (1, 1, 600_000), 600, 100)]
    );
}

/// The corrected table: London 20/min instead of 10, and France added at 6/min 60/60.
fn corrected_rates() -> String {
    RATES.replace(
        "+4420,\"United Kingdom, London\",10,",
        "+4420,\"United Kingdom, London\",20,",
    ) + "+33,France,6,EUR,60/60,0,0,2026-01-01\n"
}

/// A corrected table re-rates the period asked for, and only it; each run is audited.
async fn rerate_applies_the_newest_table_since_a_date(b: Backend) {
    let s = b.open().await;
    s.store_rates("default", &table_version(RATES), RATES, NOV_10)
        .await
        .unwrap();
    let mut cdrs = month();
    let mut l4 = call("l4", "+4420", Answered, 61_000);
    l4.start_time_ms = NOV_20 + 3_600_000;
    cdrs.push(l4);
    s.ingest("A", records(cdrs)).await.unwrap();
    let fixed = corrected_rates();
    let v2 = table_version(&fixed);
    s.store_rates("default", &v2, &fixed, NOV_20).await.unwrap();

    let audit = |since: u64| collector::server::store::AuditEntry {
        time_ms: DEC,
        action: collector::server::store::AuditAction::Rerate,
        actor: "billing-admin".into(),
        subjects: Vec::new(),
        reference: format!("since {since}"),
        affected: 0,
        tenant: Some("default".into()),
    };
    // Since 20 November: l4 (London 61 s -> 120 s at 20/min = 40) and d1 (600 s -> 200).
    let out = s.rerate("default", NOV_20, audit(NOV_20)).await.unwrap();
    assert_eq!(
        (out.version.as_deref(), out.cdrs, out.changed, out.unrated),
        (Some(v2.as_str()), 2, 2, 0)
    );
    let rows = b
        .select("SELECT cdr_id, cost, rate_version FROM cdrs WHERE cdr_id IN ('l1', 'l4') ORDER BY cdr_id")
        .await;
    assert_eq!(
        rows,
        vec![
            vec!["l1".into(), "20".into(), table_version(RATES)],
            vec!["l4".into(), "40".into(), v2.clone()],
        ]
    );
    // The whole month: every rated or destined final CDR before the 20th takes the new
    // version (l1 l2 l3 m1 m2 b1 b2) and f1 is now France; n1 (no prefix) stays unrated.
    let out = s.rerate("default", NOV, audit(NOV)).await.unwrap();
    assert_eq!((out.cdrs, out.changed, out.unrated), (11, 8, 1));
    // London: l1 120 s -> 40, l2 60 s -> 20, l3 busy, l4 120 s -> 40: 4 calls, 3 answered,
    // 181 001 ms, 300 s, 100. France: f1 90 s -> 120 s at 6/min = 12.
    let report = usage_report(&s.usage("default", NOV, DEC).await.unwrap());
    assert_eq!(
        report.destinations,
        vec![
            dest("France", (1, 1, 90_000), 120, 12),
            dest("Germany, Berlin", (2, 1, 45_200), 46, 7),
            dest("United Kingdom, London", (4, 3, 181_001), 300, 100),
            dest("United Kingdom, mobile", (2, 2, 36_000), 66, 43),
        ]
    );
    assert_eq!(
        report.unrated,
        vec![UnratedUsage {
            destination_prefix: String::new(),
            calls: 1,
            answered_ms: 10_000,
        }]
    );
    let log = s.audit_log(10).await.unwrap();
    let reruns: Vec<(u64, &str)> = log
        .iter()
        .filter(|e| e.action == collector::server::store::AuditAction::Rerate)
        .map(|e| (e.affected, e.actor.as_str()))
        .collect();
    assert_eq!(reruns, vec![(8, "billing-admin"), (2, "billing-admin")]);
}

both_backends!(
    usage_reports_outlive_retention,
    rerate_applies_the_newest_table_since_a_date,
);
