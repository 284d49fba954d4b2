//! Replay of every capture of the shared corpus against its tshark 4.0.17 oracle
//! (`F.json`, derived from the same tshark runs as `F.oracle.txt`; see the corpus README).
//!
//! For each call of the oracle: the same Call-ID, caller and callee users, final code;
//! the disposition the mapping gives for that code (CANCELLED when the oracle's
//! message list shows a CANCEL before the final response); start, answer and end within
//! 10 ms; and for every RTP stream of `rtp,streams` attributed to the call, a leg of the
//! same direction, addresses, ports and SSRC with equal packet and loss counts and mean and
//! max jitter within 5 % (or 0.1 ms). Every leg we report must appear in tshark's stream
//! table with the same packet and loss counts (the DTMF streams the JSON leaves out are
//! checked that way). REGISTER and OPTIONS dialogs must appear as registration events and
//! method counts. Two captures cannot give calls, for reasons stated at their tests.
use std::path::PathBuf;

use collector_proto::v1::{flow_event, Cdr, Disposition, MediaDirection};
use serde_json::Value;

use crate::calls::{dialog::disposition_for, CallsConfig};
use crate::cli::replay::{replay_file, ReplayOptions, ReplayOutput};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/corpus/");

fn path(name: &str) -> PathBuf {
    PathBuf::from(CORPUS).join(name)
}

fn oracle(name: &str) -> Value {
    let text = std::fs::read_to_string(path(&format!("{name}.json")))
        .unwrap_or_else(|e| panic!("test data {:?}: {e}", path(&format!("{name}.json"))));
    serde_json::from_str(&text).unwrap()
}

/// SIP ports of the oracle's decode-as rules (`tcp.port==60010,sip`).
fn decode_as_ports(o: &Value) -> Vec<u16> {
    o["decode_as"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let r = r.as_str()?;
            let (lhs, proto) = r.split_once(',')?;
            (proto == "sip").then_some(())?;
            lhs.split("==").nth(1)?.parse().ok()
        })
        .collect()
}

/// SIP ports of the decode-as rules in the header of `F.oracle.txt` (`# decode-as: none` or
/// `# decode-as: ['tcp.port==60010,sip', ...]`): every capture has that file, not every one
/// a `F.json` (the RTP accounting captures are checked against `rtp,streams` directly).
fn header_decode_as_ports(name: &str) -> Vec<u16> {
    let p = path(&format!("{name}.oracle.txt"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("test data {p:?}: {e}"));
    let rules = text
        .lines()
        .find_map(|l| l.strip_prefix("# decode-as: "))
        .unwrap_or_else(|| panic!("{p:?}: no decode-as line"));
    rules
        .split(['[', ']', '\'', ' '])
        .filter_map(|r| {
            let (lhs, proto) = r.trim_end_matches(',').split_once(',')?;
            (proto == "sip").then_some(())?;
            lhs.split("==").nth(1)?.parse().ok()
        })
        .collect()
}

fn replay(name: &str) -> (ReplayOutput, Value) {
    let o = oracle(name);
    let ports = decode_as_ports(&o);
    assert_eq!(
        ports,
        header_decode_as_ports(name),
        "{name}: decode-as rules"
    );
    // The oracle has one row per call: the interim records of the calls longer than the
    // interval (checked in `replay_is_deterministic` and the tracker's tests) are off.
    let opts = ReplayOptions {
        sip_ports: ports,
        calls: CallsConfig {
            interim_interval_ms: 0,
            ..CallsConfig::default()
        },
        ..ReplayOptions::default()
    };
    (replay_file(&path(name), &opts, |_| {}).unwrap(), o)
}

/// One SIP message line of the oracle text (tshark fields).
struct OracleMsg {
    time_epoch: f64,
    src: String,
    dst: String,
    call_id: String,
    method: String,
    status: String,
    cseq_method: String,
}

fn oracle_messages(name: &str) -> Vec<OracleMsg> {
    let text = std::fs::read_to_string(path(&format!("{name}.oracle.txt")))
        .unwrap_or_else(|e| panic!("test data {:?}: {e}", path(&format!("{name}.oracle.txt"))));
    text.lines()
        .filter(|l| l.as_bytes().first().is_some_and(u8::is_ascii_digit))
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 12).then(|| OracleMsg {
                time_epoch: f[1].parse().unwrap(),
                src: [f[3], f[5]].concat(),
                dst: [f[4], f[6]].concat(),
                call_id: f[7].to_owned(),
                method: f[8].to_owned(),
                status: f[9].to_owned(),
                cseq_method: f[11].to_owned(),
            })
        })
        .collect()
}

/// One row of tshark's `rtp,streams` table.
#[derive(Debug)]
struct OracleStream {
    src: String,
    sport: u32,
    dst: String,
    dport: u32,
    ssrc: u32,
    packets: u64,
    lost: i64,
    mean_jitter: f64,
    max_jitter: f64,
}

fn oracle_streams(name: &str) -> Vec<OracleStream> {
    let text = std::fs::read_to_string(path(&format!("{name}.oracle.txt")))
        .unwrap_or_else(|e| panic!("test data {:?}: {e}", path(&format!("{name}.oracle.txt"))));
    let table = text.split("RTP Streams").nth(1).unwrap();
    table
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('='))
        .map(|l| {
            let mut t: Vec<&str> = l.split_whitespace().collect();
            if t.last() == Some(&"X") {
                t.pop();
            }
            let n = t.len();
            // ... Pkts Lost (pct) MinΔ MeanΔ MaxΔ MinJ MeanJ MaxJ
            OracleStream {
                src: t[2].to_owned(),
                sport: t[3].parse().unwrap(),
                dst: t[4].to_owned(),
                dport: t[5].parse().unwrap(),
                ssrc: u32::from_str_radix(t[6].trim_start_matches("0x"), 16).unwrap(),
                packets: t[n - 9].parse().unwrap(),
                lost: t[n - 8].parse().unwrap(),
                mean_jitter: t[n - 2].parse().unwrap(),
                max_jitter: t[n - 1].parse().unwrap(),
            }
        })
        .collect()
}

fn close(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= (0.05 * theirs.abs()).max(0.1)
}

fn ms_close(ours: u64, oracle_epoch: &Value, what: &str, call: &str) {
    match oracle_epoch.as_f64() {
        None => assert_eq!(ours, 0, "{call}: {what} should be unset"),
        Some(t) => {
            let want = t * 1000.0;
            assert!(
                (ours as f64 - want).abs() <= 10.0,
                "{call}: {what} {ours} ms vs oracle {want:.3} ms"
            );
        }
    }
}

/// Checks every call of the oracle against the replay's CDRs.
fn check_calls(name: &str, out: &ReplayOutput, o: &Value) {
    let calls = o["calls"].as_array().unwrap();
    let mut ours: Vec<&str> = out.cdrs.iter().map(|c| c.call_id.as_str()).collect();
    let mut theirs: Vec<&str> = calls
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs, "{name}: Call-IDs");
    let msgs = oracle_messages(name);
    let streams = oracle_streams(name);
    for oc in calls {
        let id = oc["call_id"].as_str().unwrap();
        let cdr: &Cdr = out.cdrs.iter().find(|c| c.call_id == id).unwrap();
        assert!(!cdr.interim, "{id}: the capture holds the end of the call");
        let code = oc["final_status"].as_u64().unwrap();
        assert_eq!(u64::from(cdr.final_code), code, "{id}: final code");
        // A CANCEL before the final response: the caller abandoned the call, whatever the
        // UAS answered then (487, or the 408 of sngrep_aaa.pcap's first call).
        let final_seen = |m: &OracleMsg| {
            m.call_id == id && m.cseq_method == "INVITE" && m.status.parse::<u64>() == Ok(code)
        };
        let final_at = msgs.iter().position(final_seen).unwrap();
        let cancelled = msgs[..final_at]
            .iter()
            .any(|m| m.call_id == id && m.method == "CANCEL");
        let want = if cancelled && code >= 300 {
            Disposition::Cancelled
        } else {
            disposition_for(u16::try_from(code).unwrap())
        };
        assert_eq!(cdr.disposition(), want, "{id}: disposition");
        let caller = cdr.caller.as_ref().unwrap();
        let callee = cdr.callee.as_ref().unwrap();
        assert_eq!(
            caller.user,
            oc["from_user"].as_str().unwrap(),
            "{id}: caller"
        );
        assert_eq!(callee.user, oc["to_user"].as_str().unwrap(), "{id}: callee");
        check_ladder(cdr, &msgs);
        ms_close(cdr.start_time_ms, &oc["start"], "start", id);
        ms_close(cdr.answer_time_ms, &oc["answer"], "answer", id);
        ms_close(cdr.end_time_ms, &oc["end"], "end", id);
        for (key, dir) in [
            ("caller_to_callee", MediaDirection::CallerToCallee),
            ("callee_to_caller", MediaDirection::CalleeToCaller),
        ] {
            for s in oc["rtp"][key].as_array().unwrap() {
                let ssrc =
                    u32::from_str_radix(s["ssrc"].as_str().unwrap().trim_start_matches("0x"), 16)
                        .unwrap();
                let leg = cdr
                    .media
                    .iter()
                    .find(|l| {
                        l.direction() == dir
                            && l.ssrc == ssrc
                            && l.src_ip == s["src"].as_str().unwrap()
                            && u64::from(l.src_port) == s["src_port"].as_u64().unwrap()
                            && l.dst_ip == s["dst"].as_str().unwrap()
                            && u64::from(l.dst_port) == s["dst_port"].as_u64().unwrap()
                    })
                    .unwrap_or_else(|| panic!("{id}: no {key} leg for SSRC {ssrc:#x}"));
                assert_eq!(
                    leg.packets,
                    s["packets"].as_u64().unwrap(),
                    "{id} {key} packets"
                );
                assert_eq!(leg.lost, s["lost"].as_i64().unwrap(), "{id} {key} lost");
                let mean = s["mean_jitter_ms"].as_f64().unwrap();
                let max = s["max_jitter_ms"].as_f64().unwrap();
                assert!(
                    close(leg.mean_jitter_ms, mean),
                    "{id} {key}: mean jitter {} vs {mean}",
                    leg.mean_jitter_ms
                );
                assert!(
                    close(leg.max_jitter_ms, max),
                    "{id} {key}: max jitter {} vs {max}",
                    leg.max_jitter_ms
                );
            }
        }
        // Every leg we report is a stream tshark saw, with the same counts.
        for leg in &cdr.media {
            let s = streams
                .iter()
                .find(|s| {
                    s.ssrc == leg.ssrc
                        && s.src == leg.src_ip
                        && s.sport == leg.src_port
                        && s.dst == leg.dst_ip
                        && s.dport == leg.dst_port
                })
                .unwrap_or_else(|| panic!("{id}: leg {leg:?} is not in rtp,streams"));
            assert_eq!(leg.packets, s.packets, "{id}: packets of {:#x}", leg.ssrc);
            assert_eq!(leg.lost, s.lost, "{id}: lost of {:#x}", leg.ssrc);
            assert!(
                close(leg.mean_jitter_ms, s.mean_jitter),
                "{id}: {leg:?} vs {s:?}"
            );
            assert!(
                close(leg.max_jitter_ms, s.max_jitter),
                "{id}: {leg:?} vs {s:?}"
            );
        }
    }
}

/// The CDR's ladder is the oracle's messages of the call, in capture order, from its
/// initial INVITE on: method or status, CSeq method, addresses, time. It holds every
/// message up to the end of the call plus the linger (the CDR is written then; later
/// retransmissions, such as sngrep_aaa.pcap's CANCELs 30 s on, come after it).
fn check_ladder(cdr: &Cdr, msgs: &[OracleMsg]) {
    let id = cdr.call_id.as_str();
    let first = msgs
        .iter()
        .position(|m| m.call_id == id && m.method == "INVITE")
        .unwrap();
    let want: Vec<&OracleMsg> = msgs[first..].iter().filter(|m| m.call_id == id).collect();
    let label = |m: &OracleMsg| {
        if m.method.is_empty() {
            m.status.clone()
        } else {
            m.method.clone()
        }
    };
    let theirs: Vec<(String, &str, &str, &str)> = want
        .iter()
        .map(|m| {
            (
                label(m),
                m.cseq_method.as_str(),
                m.src.as_str(),
                m.dst.as_str(),
            )
        })
        .collect();
    let ours: Vec<(String, &str, &str, &str)> = cdr
        .ladder
        .iter()
        .map(|s| {
            let m = s.message.as_ref().unwrap();
            (
                m.method_or_status.clone(),
                m.cseq_method.as_str(),
                m.from.as_str(),
                m.to.as_str(),
            )
        })
        .collect();
    assert_eq!(cdr.ladder_omitted, 0, "{id}: ladder omitted");
    let until_s = (cdr.end_time_ms + CallsConfig::default().linger_ms) as f64 / 1000.0;
    let before_cdr = want.iter().filter(|m| m.time_epoch <= until_s).count();
    assert!(
        ours.len() >= before_cdr && ours.len() <= theirs.len(),
        "{id}: {} steps, the oracle has {before_cdr} before the CDR, {} in all",
        ours.len(),
        theirs.len()
    );
    assert_eq!(ours, theirs[..ours.len()], "{id}: ladder");
    for (s, m) in cdr.ladder.iter().zip(&want) {
        ms_close(
            s.time_ms,
            &serde_json::json!(m.time_epoch),
            "ladder step",
            id,
        );
    }
}

/// REGISTER dialogs appear as registration events whose last status is the oracle's final
/// status; OPTIONS dialogs are counted.
fn check_non_invite(name: &str, out: &ReplayOutput, o: &Value) {
    for d in o["non_invite_dialogs"].as_array().unwrap() {
        let id = d["call_id"].as_str().unwrap();
        let methods: Vec<&str> = d["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        if methods.contains(&"REGISTER") {
            let last = out
                .flows
                .iter()
                .filter(|f| f.call_id == id)
                .filter_map(|f| match &f.event {
                    Some(flow_event::Event::Registration(r)) if r.status_code != 0 => {
                        Some(r.status_code)
                    }
                    _ => None,
                })
                .next_back();
            assert_eq!(
                last.map(u64::from),
                d["final_status"].as_u64(),
                "{name}: registration {id}"
            );
        }
        for m in methods {
            let n = out
                .methods
                .iter()
                .find(|(k, _)| k == m)
                .map_or(0, |(_, n)| *n);
            assert!(n > 0, "{name}: {m} not counted");
        }
    }
}

fn check(name: &str) -> ReplayOutput {
    let (out, o) = replay(name);
    check_calls(name, &out, &o);
    check_non_invite(name, &out, &o);
    assert_eq!(out.media_left, (0, 0), "{name}: media entries left behind");
    assert_eq!(
        out.tables_left, [0; 4],
        "{name}: tracker tables left behind"
    );
    out
}

#[test]
fn sipp_g711_basic() {
    let out = check("sipp_g711_basic.pcap");
    assert_eq!(out.cdrs.len(), 3);
    for c in &out.cdrs {
        assert_eq!(c.hangup_side(), collector_proto::v1::HangupSide::Caller);
        assert_eq!(c.sip_messages, 6);
        assert_eq!(c.legs_hops, 1);
        assert!(c.coverage.as_ref().unwrap().complete);
        // Audio both ways plus the DTMF stream both ways (RFC 4733, a separate SSRC).
        assert_eq!(c.media.len(), 4);
        assert_eq!(
            c.media
                .iter()
                .filter(|l| l.codec == "telephone-event")
                .count(),
            2
        );
    }
}

#[test]
fn table_output() {
    let (out, _) = replay("sipp_g711_basic.pcap");
    let table = crate::present::cdrs::render_table(&out.cdrs);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("START (UTC)"));
    // Call 1: 236 packets each way, no loss, tshark's mean jitter 0.648 / 0.656 ms.
    let row = lines[1];
    for cell in [
        "1-23536@198.18.0.1",
        "sipp",
        "service",
        "answered",
        "200",
        "PCMA",
    ] {
        assert!(row.contains(cell), "{cell} in {row}");
    }
    assert!(row.contains("2026-11-25 12:55:45.904"), "{row}");
    assert_eq!(row.matches("236p 0.0% 0.6").count(), 2, "{row}");
}

#[test]
fn sipp_tcp() {
    let out = check("sipp_tcp.pcap");
    assert!(out.cdrs.iter().all(|c| c.transport == "TCP"));
}

#[test]
fn sipp_cancel() {
    let out = check("sipp_cancel.pcap");
    for c in &out.cdrs {
        assert_eq!(c.hangup_side(), collector_proto::v1::HangupSide::Caller);
        assert_eq!(c.answer_time_ms, 0);
        assert_eq!(c.billable_ms, 0);
        // 180 after 1.3 ms: the post-dial delay is the ring time (RFC 6076 §4.1).
        assert_eq!(c.post_dial_delay_ms, c.ring_time_ms - c.start_time_ms);
        assert!(c.ring_time_ms > 0);
    }
}

#[test]
fn sngrep_aaa() {
    let out = check("sngrep_aaa.pcap");
    // Two INVITEs were challenged (407) and retried with credentials: still one call each,
    // started at the first INVITE (the oracle's start).
    assert_eq!(out.cdrs.len(), 4);
    // The first INVITE was sent three times and its CANCEL ten times.
    assert!(out.tracker.retransmissions >= 8, "{:?}", out.tracker);
}

#[test]
fn ws_nb6_telephone() {
    check("ws_nb6-telephone.pcap");
}

#[test]
fn ws_one_way_codecs() {
    for f in [
        "ws_sip-rtp-g722.pcap",
        "ws_sip-rtp-g729a.pcap",
        "ws_sip-rtp-ilbc.pcap",
        "ws_sip-rtp-opus.pcap",
        "ws_sip-rtp-speex.pcap",
    ] {
        let out = check(f);
        // One-way audio by design (sendonly/recvonly SDP): no one-way alert.
        assert!(
            !out.flows.iter().any(|f| matches!(
                &f.event,
                Some(flow_event::Event::Alert(a)) if a.kind == "one_way_audio"
            )),
            "{f}"
        );
    }
}

#[test]
fn heplify_tcp() {
    let out = check("heplify_sip_ipv4_tcp.pcap");
    assert_eq!(out.cdrs[0].transport, "TCP");
}

// The far end's RTCP beside our measurement, against tshark 4.0.17's decoding of the same
// reports (`tshark -n -r heplify_sip_ipv4_tcp.pcap -Y rtcp -T fields -e frame.number
// -e frame.time_epoch -e rtcp.senderssrc -e rtcp.ssrc.identifier -e rtcp.ssrc.fraction
// -e rtcp.ssrc.cum_nr -e rtcp.ssrc.high_seq -e rtcp.ssrc.jitter -e rtcp.ssrc.lsr
// -e rtcp.ssrc.dlsr -e rtcp.timestamp.ntp.msw -e rtcp.timestamp.ntp.lsw`):
//   frame 14 1311857690.954947  SR from 0x42f433d4, NTP 2099493.811748763 (middle 32 bits
//            0x09253062), no report block
//   frame 17 1311857690.972317  SR from 0x5a3361b3, one block about 0x42f433d4: fraction 0,
//            cumulative 0, extended highest 54340, jitter 0, LSR 153432162 (0x09253062),
//            DLSR 1048 (1/65536 s)
// So the callee→caller stream (0x42f433d4) has a far-end view, the other none; the round
// trip seen from the capture point is (972.317 − 954.947) ms − 1048/65536 s = 1.379 ms, and
// the E-model's delay uses half of it.
#[test]
fn heplify_tcp_far_end_rtcp_equals_tshark() {
    let (out, _) = replay("heplify_sip_ipv4_tcp.pcap");
    let legs = &out.cdrs[0].media;
    let back = legs.iter().find(|l| l.ssrc == 0x42f4_33d4).unwrap();
    let fe = back.far_end.as_ref().expect("a report about 0x42f433d4");
    assert_eq!(fe.fraction_lost_pct, 0.0);
    assert_eq!(fe.cumulative_lost, 0);
    assert_eq!(fe.ext_highest_seq, 54_340);
    assert_eq!(fe.jitter_ms, 0.0);
    let rtt = (1_311_857_690.972_317 - 1_311_857_690.954_947) * 1000.0 - 1048.0 / 65.536;
    assert!((fe.rtt_ms - rtt).abs() < 0.01, "{} vs {rtt}", fe.rtt_ms);
    assert!(!fe.disagreement && fe.disagreement_reason.is_empty());
    assert_eq!(back.delay_source, "rtcp_rtt");
    let fwd = legs.iter().find(|l| l.ssrc == 0x5a33_61b3).unwrap();
    assert!(fwd.far_end.is_none());
    // One RTT per call: the forward leg's E-model uses it too, its mouth-to-ear delay is
    // larger by half the round trip than with none.
    assert_eq!(fwd.delay_source, "rtcp_rtt");
    assert!(back.ta_ms > rtt / 2.0, "{}", back.ta_ms);
}

/// One XR VoIP Metrics block of the last section of `F.oracle.txt` (tshark's decoding, raw
/// field values as tshark prints them; see testdata/corpus/synthetic/make_rtcp_xr.sh).
#[derive(Debug)]
struct OracleXr {
    frame: u64,
    /// SSRC of source: the stream the block is about.
    ssrc: u32,
    loss: f64,
    discard: f64,
    burst_density: f64,
    gap_density: f64,
    rt_delay: u32,
    es_delay: u32,
    r_factor: u32,
    mos_lq: f64,
    mos_cq: f64,
}

fn oracle_xr(name: &str) -> Vec<OracleXr> {
    let p = path(&format!("{name}.oracle.txt"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("test data {p:?}: {e}"));
    let section = text
        .split("## ")
        .find(|s| s.contains("rtcp.xr.bt == 7"))
        .unwrap_or_else(|| panic!("{p:?}: no XR section"));
    let mut lines = section.lines().skip(1);
    let cols: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .unwrap()
        .split('\t')
        .collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let get = |c: &str| f[cols.iter().position(|x| *x == c).unwrap()];
            let num = |c: &str| get(c).parse::<f64>().unwrap();
            OracleXr {
                frame: get("frame.number").parse().unwrap(),
                ssrc: u32::from_str_radix(get("rtcp.ssrc.identifier").trim_start_matches("0x"), 16)
                    .unwrap(),
                loss: num("rtcp.ssrc.fraction"),
                discard: num("rtcp.ssrc.discarded"),
                burst_density: num("rtcp.xr.voipmetrics.burstdensity"),
                gap_density: num("rtcp.xr.voipmetrics.gapdensity"),
                rt_delay: get("rtcp.xr.voipmetrics.rtdelay").parse().unwrap(),
                es_delay: get("rtcp.xr.voipmetrics.esdelay").parse().unwrap(),
                r_factor: get("rtcp.xr.voipmetrics.rfactor").parse().unwrap(),
                mos_lq: num("rtcp.xr.voipmetrics.moslq"),
                mos_cq: num("rtcp.xr.voipmetrics.moscq"),
            }
        })
        .collect()
}

// RTCP-XR VoIP Metrics (RFC 3611 §4.7) in the CDR against tshark 4.0.17's decoding of the
// same blocks (the last section of the oracle). The capture is synthetic (the corpus has no
// XR; testdata/corpus/synthetic/make_rtcp_xr.py): one call, RTP both ways, each receiver
// sending two compound RR + SDES + XR datagrams to the RTP port + 1. Each leg carries the
// latest block about its SSRC; rates are tshark's 8-bit values / 256 in percent, MOS
// tshark's value, and 127 ("unavailable" in R factor and MOS) is absent.
#[test]
fn synthetic_rtcp_xr_far_end_equals_tshark() {
    let name = "synthetic_rtcp_xr.pcap";
    let opts = ReplayOptions {
        sip_ports: header_decode_as_ports(name),
        calls: CallsConfig {
            interim_interval_ms: 0,
            ..CallsConfig::default()
        },
        ..ReplayOptions::default()
    };
    let out = replay_file(&path(name), &opts, |_| {}).unwrap();
    assert_eq!(out.cdrs.len(), 1);
    let cdr = &out.cdrs[0];
    let xr = oracle_xr(name);
    assert_eq!(xr.len(), 4, "{xr:?}");
    let streams = oracle_streams(name);
    assert_eq!(cdr.media.len(), streams.len());
    let pct = |v: f64| v * 100.0 / 256.0;
    let unavailable = |v: f64| (v != 127.0).then_some(v);
    for leg in &cdr.media {
        // Our own counts are tshark's `rtp,streams`.
        let s = streams.iter().find(|s| s.ssrc == leg.ssrc).unwrap();
        assert_eq!(
            (leg.packets, leg.lost),
            (s.packets, s.lost),
            "{:#x}",
            leg.ssrc
        );
        // The latest block about this stream (frames are in capture order).
        let want = xr.iter().rev().find(|x| x.ssrc == leg.ssrc).unwrap();
        let fe = leg.far_end.as_ref().expect("a far-end view");
        let ctx = format!("{:#x}, oracle frame {}", leg.ssrc, want.frame);
        assert!(fe.xr_present, "{ctx}");
        assert_eq!(fe.xr_loss_pct, pct(want.loss), "{ctx}");
        assert_eq!(fe.xr_discard_pct, pct(want.discard), "{ctx}");
        assert_eq!(fe.xr_burst_density_pct, pct(want.burst_density), "{ctx}");
        assert_eq!(fe.xr_gap_density_pct, pct(want.gap_density), "{ctx}");
        assert_eq!(fe.xr_round_trip_ms, want.rt_delay, "{ctx}");
        assert_eq!(fe.xr_end_system_delay_ms, want.es_delay, "{ctx}");
        assert_eq!(
            fe.xr_r_factor,
            (want.r_factor != 127).then_some(want.r_factor),
            "{ctx}"
        );
        // tshark prints MOS as a 32-bit float (4.1 is 4.0999999).
        let mos = |v: Option<f64>| v.map(|v| (v * 10.0).round());
        assert_eq!(mos(fe.xr_mos_lq), mos(unavailable(want.mos_lq)), "{ctx}");
        assert_eq!(mos(fe.xr_mos_cq), mos(unavailable(want.mos_cq)), "{ctx}");
        // The XR loss rate against ours, with the report block's tolerance.
        let far = pct(want.loss);
        let apart = (far - leg.loss_pct).abs() > 2.0_f64.max(0.5 * far.max(leg.loss_pct));
        assert_eq!(
            fe.disagreement_reason.split(',').any(|r| r == "xr_loss"),
            apart,
            "{ctx}: ours {} % vs {far} %: {:?}",
            leg.loss_pct,
            fe.disagreement_reason
        );
        assert_eq!(fe.disagreement, !fe.disagreement_reason.is_empty());
    }
    // Each direction as the capture was built: alice's stream (2 % lost on the wire) has a
    // report block as well and agrees; bob's (none lost) has only XR blocks, the latest
    // with R and MOS unavailable, and a loss rate of 10.2 %: the far end is there, from XR
    // alone, and disagrees.
    let a = cdr.media.iter().find(|l| l.ssrc == 0x1a2b_3c4d).unwrap();
    let fa = a.far_end.as_ref().unwrap();
    assert!(fa.ext_highest_seq > 0 && !fa.disagreement, "{fa:?}");
    assert!(fa.xr_r_factor.is_some() && fa.xr_mos_lq.is_some());
    let b = cdr.media.iter().find(|l| l.ssrc == 0x5e6f_7081).unwrap();
    let fb = b.far_end.as_ref().unwrap();
    assert_eq!(fb.ext_highest_seq, 0, "no report block about it");
    assert_eq!(fb.disagreement_reason, "xr_loss");
    assert!(fb.xr_r_factor.is_none() && fb.xr_mos_lq.is_none() && fb.xr_mos_cq.is_none());
    // In the JSON CDR line, unavailable is null, not 12.7.
    let json = serde_json::to_value(b).unwrap();
    assert!(json["far_end"]["xr_mos_lq"].is_null(), "{json}");
    assert_eq!(json["far_end"]["xr_present"], true);
}

#[test]
fn heplify_tcp_retransmissions_register() {
    check("heplify_sip_ipv4_tcp_retrans.pcap");
}

#[test]
fn heplify_websocket() {
    let out = check("heplify_sip_tcp_websocket.pcap");
    // Captured on an OpenSIPS proxy: every message is seen arriving and leaving (two hops,
    // counted once). The browser's leg is SIP over WebSocket; FreeSWITCH, a B2BUA, places
    // the second leg over UDP and names the first leg's Call-ID in `XCall-ID`.
    let a = out
        .cdrs
        .iter()
        .find(|c| c.call_id == "kovfhoptshgn59q712sr")
        .unwrap();
    let b = out
        .cdrs
        .iter()
        .find(|c| c.call_id == "926ffd16-6154-1237-09ba-0270b3230128")
        .unwrap();
    assert_eq!((a.transport.as_str(), b.transport.as_str()), ("WS", "UDP"));
    assert_eq!((a.legs_hops, b.legs_hops), (2, 2));
    assert_eq!(a.correlation_id, "kovfhoptshgn59q712sr");
    assert_eq!(b.correlation_id, a.correlation_id);
    // Leg A: INVITE, 407, ACK, INVITE, 100, 180, 183, 200, ACK, BYE, 200 (each seen twice).
    assert_eq!(a.sip_messages, 11);
    // The 407 challenge is not why the answered call ended; leg B's BYE says Q.850 16.
    assert!(a.reason.is_none(), "{:?}", a.reason);
    let r = b.reason.as_ref().unwrap();
    assert_eq!((r.protocol.as_str(), r.cause), ("Q.850", 16));
}

#[test]
fn ndpi_rtcp_only() {
    let (out, o) = replay("ndpi_rtcp_multiple_pkts_in_the_same_datagram.pcap");
    assert!(o["calls"].as_array().unwrap().is_empty());
    assert!(out.cdrs.is_empty());
    // Without SDP nothing is bound: the kernel would not copy this RTCP either.
    assert_eq!(out.media.rtcp_copied, 0);
}

/// A Valid8 phone writes IPv6 addresses without brackets in the Request-URI, Via and
/// Contact (`sip:4321@fec0:0:0:0:216:d3ff:fe0d:22c:5060`), which RFC 3261 §25.1 forbids.
/// The SIP parser accepts such an address when it cannot be misread (all eight groups
/// written out, then an optional `:port`), so the call is seen and matches the oracle.
/// (The capture's clock is broken: 201118545 s between the INVITE and its 100 Trying;
/// tshark's times, which the oracle holds, are the packets' times, as ours are.)
#[test]
fn heplify_ipv6_unbracketed_addresses() {
    let out = check("heplify_sip_ipv6_udp.pcap");
    assert_eq!(out.cdrs.len(), 1);
    assert_eq!(out.tracker.parse_errors, 0);
}

/// SIP-I over SCTP (RFC 4168): the kernel programs parse UDP and TCP only (an SCTP packet
/// is counted `no_match`), so the agent could never report this call; replay decodes what
/// the agent would and counts the SCTP packets as unsupported instead of inventing a call.
#[test]
fn heplify_sctp_is_not_decoded() {
    let (out, o) = replay("heplify_sip_sctp.pcap");
    assert_eq!(o["calls"].as_array().unwrap().len(), 1);
    assert!(out.cdrs.is_empty());
    assert_eq!(out.tracker.messages, 0);
    assert!(out.net.sctp_unsupported > 0);
}

/// Replaying a capture twice gives byte-identical JSON, CDR ids included (derived from
/// the file's hash and the call's order).
#[test]
fn replay_is_deterministic() {
    let names: Vec<String> = std::fs::read_dir(CORPUS)
        .unwrap_or_else(|e| panic!("test data {:?}: {e}", CORPUS))
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.ends_with(".pcap").then_some(n)
        })
        .collect();
    assert!(names.len() >= 16, "{names:?}");
    for name in names {
        let json = |out: &ReplayOutput| -> Vec<String> {
            out.cdrs
                .iter()
                .map(|c| serde_json::to_string(c).unwrap())
                .collect()
        };
        let opts = || ReplayOptions {
            sip_ports: header_decode_as_ports(&name),
            ..ReplayOptions::default()
        };
        let a = replay_file(&path(&name), &opts(), |_| {}).unwrap();
        let b = replay_file(&path(&name), &opts(), |_| {}).unwrap();
        assert_eq!(json(&a), json(&b), "{name}");
        // One id per call: the final records' ids are unique, and each interim record
        // (numbered 1, 2, ... before it) carries the id of its call's final record.
        let finals: Vec<&Cdr> = a.cdrs.iter().filter(|c| !c.interim).collect();
        let mut ids: Vec<&str> = finals.iter().map(|c| c.cdr_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), finals.len(), "{name}: CDR ids are unique");
        for f in &finals {
            let seqs: Vec<u32> = a
                .cdrs
                .iter()
                .filter(|c| c.interim && c.cdr_id == f.cdr_id)
                .map(|c| c.interim_seq)
                .collect();
            let want: Vec<u32> = (1..=f.interim_seq).collect();
            assert_eq!(seqs, want, "{name}: interim records of {}", f.cdr_id);
        }
    }
}
