//! The SIP ladder of one leg (sngrep's call flow), drawn here as inline SVG from the CDR's
//! stored message summaries (`Cdr.ladder`): one column per hop address (as the privacy
//! policy left it), one arrow per captured message in capture order, labelled with the
//! method or status and the CSeq method, timed from the first message; retransmissions
//! are dashed and messages with SDP say so. Each arrow is a `<g class="step">`.
use std::fmt::Write as _;

use collector_proto::v1::{Cdr, SipMessage};

use super::layout::esc;
// Where the ladder says where it skipped messages: after the agent's first steps (see
// `Cdr.ladder_omitted`).
use crate::calls::tracker::LADDER_HEAD as HEAD_STEPS;

/// Space between two hop columns.
const COLUMN: f64 = 190.0;
/// Left margin (the time column).
const LEFT: f64 = 150.0;
/// Height of the hop labels above the first arrow.
const TOP: f64 = 44.0;
/// Height of one arrow's row.
const ROW: f64 = 30.0;
/// Characters of a hop label shown (pseudonyms are long; the whole one is its tooltip).
const HOP_CHARS: usize = 22;

/// The ladder of `c`, or a note when its CDR carries none (records from agents older than
/// the ladder).
pub fn ladder(c: &Cdr) -> String {
    let steps: Vec<(u64, &SipMessage, bool)> = c
        .ladder
        .iter()
        .filter_map(|s| s.message.as_ref().map(|m| (s.time_ms, m, s.retransmission)))
        .collect();
    let Some(t0) = steps.iter().map(|s| s.0).min() else {
        return "<p class=\"note\">This record carries no SIP messages.</p>".into();
    };
    let mut hops: Vec<&str> = Vec::new();
    for (_, m, _) in &steps {
        for h in [m.from.as_str(), m.to.as_str()] {
            if !hops.contains(&h) {
                hops.push(h);
            }
        }
    }
    let gap = usize::from(c.ladder_omitted > 0 && steps.len() > HEAD_STEPS);
    let rows = steps.len() + gap;
    let width = LEFT + COLUMN * hops.len().saturating_sub(1) as f64 + 110.0;
    let height = TOP + ROW * rows as f64 + 16.0;
    let x = |hop: &str| LEFT + COLUMN * hops.iter().position(|h| *h == hop).unwrap_or(0) as f64;
    let mut s = format!(
        "<svg class=\"ladder\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" \
         height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         aria-label=\"SIP ladder, {} messages\" font-size=\"11\" font-family=\"sans-serif\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
         markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"#333\"/></marker></defs>",
        steps.len()
    );
    for h in &hops {
        let short: String = h.chars().take(HOP_CHARS).collect();
        let _ = write!(
            s,
            "<g class=\"hop\"><title>{}</title><text x=\"{x:.1}\" y=\"16\" \
             text-anchor=\"middle\" font-weight=\"bold\">{}</text></g>\
             <line x1=\"{x:.1}\" y1=\"24\" x2=\"{x:.1}\" y2=\"{b:.1}\" stroke=\"#999\"/>",
            esc(h),
            esc(&short),
            x = x(h),
            b = height - 8.0,
        );
    }
    for (n, (t, m, retransmission)) in steps.iter().enumerate() {
        let row = n + usize::from(gap == 1 && n >= HEAD_STEPS);
        let y = TOP + ROW * row as f64 + ROW / 2.0;
        let (x1, x2) = (x(&m.from), x(&m.to));
        let label = if m.method_or_status == m.cseq_method {
            m.method_or_status.clone()
        } else {
            format!("{} {}", m.method_or_status, m.cseq_method)
        };
        let label = if m.has_sdp {
            format!("{label} (SDP)")
        } else {
            label
        };
        let dash = if *retransmission {
            " stroke-dasharray=\"5,3\""
        } else {
            ""
        };
        let line = if (x1 - x2).abs() < 1.0 {
            // A message a hop sent to itself (loopback): a small loop.
            format!(
                "<path d=\"M{x1:.1},{a:.1} h40 v8 h-40\" fill=\"none\" stroke=\"#333\"{dash} \
                 marker-end=\"url(#arrow)\"/>",
                a = y - 4.0
            )
        } else {
            format!(
                "<line x1=\"{x1:.1}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" y2=\"{y:.1}\" stroke=\"#333\"\
                 {dash} marker-end=\"url(#arrow)\"/>"
            )
        };
        let _ = write!(
            s,
            "<g class=\"step{}\" data-label=\"{}\"><text x=\"8\" y=\"{ty:.1}\" fill=\"#555\">\
             +{:.3} s</text>{line}<text x=\"{mid:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\">\
             {}</text></g>",
            if *retransmission {
                " retransmission"
            } else {
                ""
            },
            esc(&m.method_or_status),
            t.saturating_sub(t0) as f64 / 1000.0,
            esc(&label),
            ty = y + 4.0,
            mid = (x1 + x2) / 2.0,
            ly = y - 5.0,
        );
    }
    if gap == 1 {
        let _ = write!(
            s,
            "<text class=\"omitted\" x=\"{LEFT}\" y=\"{:.1}\" fill=\"#a40000\">\
             … {} messages not kept …</text>",
            TOP + ROW * HEAD_STEPS as f64 + ROW / 2.0 + 4.0,
            c.ladder_omitted
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use collector_proto::v1::LadderStep;

    fn step(t: u64, what: &str, cseq: &str, from: &str, to: &str, re: bool) -> LadderStep {
        LadderStep {
            time_ms: t,
            message: Some(SipMessage {
                method_or_status: what.into(),
                cseq_method: cseq.into(),
                from: from.into(),
                to: to.into(),
                has_sdp: what == "INVITE",
                ..Default::default()
            }),
            retransmission: re,
        }
    }

    #[test]
    fn one_arrow_per_message_one_column_per_hop() {
        let c = Cdr {
            ladder: vec![
                step(1_000, "INVITE", "INVITE", "a", "sbc", false),
                step(1_010, "INVITE", "INVITE", "sbc", "b<&>", false),
                step(1_510, "INVITE", "INVITE", "a", "sbc", true),
                step(2_000, "200", "INVITE", "b<&>", "sbc", false),
            ],
            ..Default::default()
        };
        let svg = ladder(&c);
        assert_eq!(svg.matches("<g class=\"step").count(), 4);
        assert_eq!(svg.matches("class=\"step retransmission\"").count(), 1);
        assert_eq!(svg.matches("<g class=\"hop\">").count(), 3);
        assert!(svg.contains(">INVITE (SDP)<"), "{svg}");
        assert!(svg.contains(">200 INVITE<"), "{svg}");
        assert!(svg.contains(">+1.000 s<"), "{svg}");
        assert!(
            svg.contains("b&lt;&amp;&gt;") && !svg.contains("b<&>"),
            "{svg}"
        );
        assert!(ladder(&Cdr::default()).contains("no SIP messages"));
    }

    #[test]
    fn says_how_many_messages_were_not_kept() {
        let c = Cdr {
            ladder: (0..64)
                .map(|i| step(i, "OPTIONS", "OPTIONS", "a", "b", false))
                .collect(),
            ladder_omitted: 36,
            ..Default::default()
        };
        let svg = ladder(&c);
        assert!(svg.contains("… 36 messages not kept …"), "{svg}");
        assert_eq!(svg.matches("<g class=\"step").count(), 64);
    }
}
