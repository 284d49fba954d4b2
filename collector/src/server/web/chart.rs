//! The quality chart of one leg, drawn here as inline SVG (no script, nothing fetched):
//! MOS and loss over the 10-second intervals (`MediaLeg.intervals`), one polyline per media
//! stream, coloured by direction, with labelled axes. Colours are presentation attributes,
//! not inline styles, which the console's CSP forbids.
use std::fmt::Write as _;

use collector_proto::v1::{MediaDirection, MediaLeg};

use super::layout::esc;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 30.0;

/// One line: its label, colour and points (time since the chart's start in the chart's
/// unit, and the value).
pub struct Series {
    /// The legend (escaped when drawn).
    pub label: String,
    /// An SVG colour.
    pub colour: &'static str,
    /// `(time, value)` points, in time order.
    pub points: Vec<(f64, f64)>,
}

/// Line colours for series that are not directions (agents), in turn.
pub const PALETTE: [&str; 6] = [
    "#1f6fb2", "#c2571a", "#2e8b57", "#8e44ad", "#b8860b", "#555555",
];

/// The direction's short name (`caller_to_callee`).
pub fn direction_name(d: MediaDirection) -> String {
    d.as_str_name()
        .trim_start_matches("MEDIA_DIRECTION_")
        .to_ascii_lowercase()
}

/// The MOS chart and the loss chart of `media`, or a note when no interval was measured.
pub fn quality(media: &[MediaLeg]) -> String {
    let t0 = media
        .iter()
        .flat_map(|m| m.intervals.iter().map(|i| i.start_ms))
        .min();
    let Some(t0) = t0 else {
        return "<p class=\"note\">No 10-second intervals were measured for this leg.</p>".into();
    };
    let series = |value: fn(&collector_proto::v1::MediaInterval) -> f64| -> Vec<Series> {
        media
            .iter()
            .filter(|m| !m.intervals.is_empty())
            .map(|m| Series {
                label: format!("{} ssrc {:08x}", direction_name(m.direction()), m.ssrc),
                colour: match m.direction() {
                    MediaDirection::CallerToCallee => "#1f6fb2",
                    MediaDirection::CalleeToCaller => "#c2571a",
                    MediaDirection::Unspecified => "#555555",
                },
                points: m
                    .intervals
                    .iter()
                    .filter(|i| value(i) >= 0.0)
                    .map(|i| {
                        let mid =
                            i.start_ms.saturating_sub(t0) as f64 + f64::from(i.duration_ms) / 2.0;
                        (mid / 1000.0, value(i))
                    })
                    .collect(),
            })
            .collect()
    };
    let end_s = media
        .iter()
        .flat_map(|m| m.intervals.iter())
        .map(|i| (i.start_ms.saturating_sub(t0) + u64::from(i.duration_ms)) as f64 / 1000.0)
        .fold(1.0, f64::max);
    // A MOS of 0 means "not scored": left out of the line (negative values are skipped)
    // rather than drawn at the bottom.
    let mos = series(|i| if i.mos > 0.0 { i.mos } else { -1.0 });
    let loss = series(|i| i.loss_pct);
    let loss_max = loss
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        .ceil();
    chart("MOS", 1.0, 5.0, &mos, end_s, "s") + &chart("loss %", 0.0, loss_max, &loss, end_s, "s")
}

/// One chart: value axis `lo..=hi`, time axis `0..=end_s` in `unit` (`s`, `h`).
pub fn chart(title: &str, lo: f64, hi: f64, series: &[Series], end_s: f64, unit: &str) -> String {
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |t: f64| LEFT + t / end_s * w;
    let y = |v: f64| TOP + (1.0 - (v.clamp(lo, hi) - lo) / (hi - lo)) * h;
    let mut s = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" \
         height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"{} over time\" font-size=\"11\" font-family=\"sans-serif\">\
         <text x=\"{LEFT}\" y=\"14\" font-weight=\"bold\">{}</text>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#333\"/>\
         <line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#333\"/>",
        esc(title),
        esc(title),
        b = TOP + h,
        r = LEFT + w,
    );
    for v in [lo, (lo + hi) / 2.0, hi] {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 4.0,
            y(v) + 4.0,
            trim(v)
        );
    }
    for t in [0.0, end_s / 2.0, end_s] {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{} {}</text>",
            x(t),
            TOP + h + 16.0,
            trim(t),
            esc(unit)
        );
    }
    for (n, series) in series.iter().enumerate() {
        let points: Vec<String> = series
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{}\" text-anchor=\"end\" fill=\"{c}\">{}</text>",
            points.join(" "),
            LEFT + w,
            14.0 + 12.0 * n as f64,
            esc(&series.label),
            c = series.colour,
        );
        // A dot per interval, so a call with one interval still shows its value.
        for &(t, v) in &series.points {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                x(t),
                y(v),
                series.colour
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A number for an axis label: no decimals when whole.
fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_proto::v1::MediaInterval;

    #[test]
    fn one_polyline_per_stream_in_each_chart() {
        let leg = |d: MediaDirection| MediaLeg {
            direction: d as i32,
            intervals: (0..3)
                .map(|k| MediaInterval {
                    start_ms: 1_000 + 10_000 * k,
                    duration_ms: 10_000,
                    mos: 4.0 + 0.1 * k as f64,
                    loss_pct: k as f64,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let svg = quality(&[
            leg(MediaDirection::CallerToCallee),
            leg(MediaDirection::CalleeToCaller),
        ]);
        assert_eq!(svg.matches("<svg").count(), 2);
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert_eq!(svg.matches("<circle").count(), 12);
        assert_eq!(svg.matches("caller_to_callee").count(), 2);
        // Loss axis up to the worst interval's 2 %, time axis over 30 s.
        assert!(svg.contains(">30 s<"), "{svg}");
        assert!(quality(&[MediaLeg::default()]).contains("No 10-second intervals"));
    }
}
