//! `collector ship-spool` (hidden): the agent's shipping half on its own. Opens a spool
//! directory (reporting any damage its recovery found), optionally appends generated CDRs
//! at a steady rate as a producer would, and ships everything to a collector with the
//! same [`Shipper`] the agent uses. Used by the crash tests (it is killed with SIGKILL in
//! the middle of sending) and to drain a spool left behind by a dead agent.
//!
//! Output: one JSON line on stderr after opening (`{"event":"opened",...}` with the
//! recovery report, also logged as a warning when damage was found) and one on stdout at
//! the end (`{"event":"done",...}`).
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context as _;
use collector_proto::v1::{Cdr, Disposition, MediaLeg, Party};
use prost::Message as _;

use super::ShipSpoolArgs;
use crate::{
    server::retention::now_ms,
    ship::{ShipOptions, Shipper},
    spool::{self, SharedSpool, Spool, SpoolOptions},
};

/// The CDR generated for sequence `seq`: its ids name the sequence, so a test can check
/// every stored CDR against the sequence it was stored under.
pub fn generated_cdr(agent_id: &str, seq: u64, start_ms: u64) -> Cdr {
    Cdr {
        agent_id: agent_id.to_string(),
        cdr_id: format!("c{seq}"),
        call_id: format!("cid_gen_{seq}"),
        caller: Some(Party {
            user: format!("n_gen_caller{}", seq % 10),
            domain: "d_gen_example".into(),
            display: String::new(),
        }),
        callee: Some(Party {
            user: format!("n_gen_callee{}", seq % 7),
            domain: "d_gen_example".into(),
            display: String::new(),
        }),
        start_time_ms: start_ms,
        answer_time_ms: start_ms + 2_000,
        end_time_ms: start_ms + 62_000,
        duration_ms: 62_000,
        billable_ms: 60_000,
        disposition: Disposition::Answered as i32,
        final_code: 200,
        codecs: vec!["PCMU".into()],
        media: vec![MediaLeg {
            codec: "PCMU".into(),
            packets: 3_000,
            loss_pct: 0.5,
            mos: 4.2,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Runs the verb.
pub fn run(args: ShipSpoolArgs) -> anyhow::Result<()> {
    let spool = Spool::open_with_key_file(
        &args.spool,
        SpoolOptions::default(),
        args.spool_key.as_deref(),
    )
    .with_context(|| format!("opening spool {}", args.spool.display()))?;
    let stats = spool.stats();
    eprintln!(
        "{}",
        serde_json::json!({
            "event": "opened",
            "last_seq": stats.next_seq - 1,
            "acked": stats.acked,
            "recovery": stats.recovery,
        })
    );
    let spool: SharedSpool = Arc::new(Mutex::new(spool));
    let security = args.conn.security()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let produced = Arc::new(AtomicBool::new(args.produce == 0));
    let producer = {
        let (spool, produced, agent) = (
            Arc::clone(&spool),
            Arc::clone(&produced),
            args.agent_id.clone(),
        );
        let (target, every) = (args.produce, Duration::from_millis(args.every_ms));
        std::thread::spawn(move || -> anyhow::Result<()> {
            loop {
                let mut s = spool::lock(&spool)?;
                let next = s.last_seq() + 1;
                if next > target {
                    break;
                }
                let payload = generated_cdr(&agent, next, now_ms()).encode_to_vec();
                let seq = s.append(&payload)?;
                drop(s);
                anyhow::ensure!(seq == next, "spool gave sequence {seq}, expected {next}");
                std::thread::sleep(every);
            }
            produced.store(true, Ordering::SeqCst);
            Ok(())
        })
    };
    let shipper = Shipper::new(Arc::clone(&spool), args.conn.server.clone(), &args.agent_id)
        .with_options(ShipOptions {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            ack_timeout: Duration::from_secs(10),
            ..ShipOptions::default()
        })
        .with_security(security);
    let until_acked = args.until_acked;
    let done = {
        let (spool, produced) = (Arc::clone(&spool), Arc::clone(&produced));
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if !until_acked {
                    continue;
                }
                // Nothing left to read (a damaged tail may have burnt the last sequences, so
                // the ack cannot be compared with the last sequence).
                let drained = spool::lock(&spool).is_ok_and(|s| s.unacked_from(0).next().is_none());
                if produced.load(Ordering::SeqCst) && drained {
                    return;
                }
            }
        }
    };
    rt.block_on(async {
        tokio::select! {
            r = shipper.run(done) => r.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })?;
    if producer.is_finished() {
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
    }
    let s = spool::lock(&spool)?;
    println!(
        "{}",
        serde_json::json!({"event": "done", "last_seq": s.last_seq(), "acked": s.acked()})
    );
    Ok(())
}
