//! The ITU-T G.107 E-model (narrowband, R 0..100, §7) and the G.107.1 wideband E-model
//! (R 0..129), turned into a MOS per G.107 Annex B and G.107.1 Annex A, with a codec table of
//! equipment-impairment (Ie) and packet-loss-robustness (Bpl) values from ITU-T G.113.
//!
//! What is modelled, and what is not:
//! - All terminal and circuit parameters are G.107 Table 3 defaults (SLR 8, RLR 2, STMR 15,
//!   TELR 65, WEPL 110, Nc −70 dBm0p, Ps = Pr = 35 dB(A), qdu 1, A 0). A passive collector
//!   cannot measure loudness ratings or echo paths; with all defaults R = 93.2 (G.107 §7.7).
//! - Delay enters through the one-way mouth-to-ear delay Ta with T = Ta and Tr = 2T (the echo
//!   paths are assumed as long as the mouth-to-ear path).
//! - Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl/BurstR + Bpl) (G.107 §7.6; G.107.1 uses the same
//!   form with 95, not 129).
//! - The STMR < 9 dB and STMR > 20 dB adjustments of Idte are not implemented: the default
//!   STMR (15 dB) never reaches them.
//! - Wideband (G.107.1): R_wb = Ro,wb − Is,wb − Id,wb − Ie,eff,wb + A with Ro,wb = 129 and
//!   Is,wb = 0 (the G.107.1 defaults). For Id,wb we use 1.29 × the narrowband Id with the same
//!   delays: our approximation, chosen so that delay costs the same share of the scale on both;
//!   G.107.1's own delay equations were not at hand when this was written.
//! - MOS: narrowband per G.107 Annex B; wideband per G.107.1 Annex A, which rescales
//!   R_x = R_wb / 1.29 and applies the same polynomial. The two MOS values live on different
//!   scales (a wideband MOS of 4.3 is better than a narrowband 4.4): every result names its
//!   [`Band`], and they must not be averaged together. G.107.2 (fullband, R 0..148) is not
//!   implemented; Opus is scored as wideband.
#![deny(clippy::indexing_slicing, clippy::panic)]

use serde::Serialize;

/// Ro,wb: the wideband E-model's best-case rating (G.107.1).
pub const RO_WB: f64 = 129.0;
/// Ratio of the wideband to the narrowband R scale (G.107.1 Annex A).
pub const WB_SCALE: f64 = 1.29;
/// Largest one-way delay [`evaluate`] accepts, ms; larger values are clamped.
pub const MAX_TA_MS: f64 = 60_000.0;

/// Audio bandwidth class, which selects the E-model variant and the MOS scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Band {
    /// 300..3400 Hz: G.107, R 0..100, MOS_CQE.
    Narrowband,
    /// 50..7000 Hz: G.107.1, R 0..129, MOS_CQEW.
    Wideband,
}

/// Where a codec's Ie and Bpl came from: how far to trust a MOS computed from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Provenance {
    /// Both values from an ITU-T G.113 table (see the entry's `source`).
    ItuTable,
    /// At least one value borrowed from a related codec's G.113 entry.
    Borrowed,
    /// At least one value is our estimate: no published value was available to us.
    Estimate,
}

/// E-model parameters of one codec.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CodecProfile {
    /// Canonical name.
    pub name: &'static str,
    /// Equipment impairment factor (Ie, or Ie,wb for wideband codecs).
    pub ie: f64,
    /// Packet-loss robustness factor (Bpl, or Bpl,wb).
    pub bpl: f64,
    /// Narrowband or wideband model.
    pub band: Band,
    /// Default packetisation interval (ms) when SDP gives no ptime.
    pub packet_ms: u32,
    /// Encoder look-ahead (ms), added to the mouth-to-ear delay.
    pub lookahead_ms: f64,
    /// How the values were obtained.
    pub provenance: Provenance,
    /// Citation of the values, in words.
    pub source: &'static str,
}

// Values quoted "G.113 Table I.x" are ITU-T G.113 (11/2007) Appendix I: Table I.1 lists Ie,
// Table I.3 lists Bpl under random loss. G.711, G.729A and the G.711 no-PLC values are also
// those the project brief gives. The G.723.1 and GSM pairs are as we recall those tables and
// were not re-checked against the text.

/// G.711 (PCMU/PCMA) with packet-loss concealment (G.711 Appendix I), the usual case.
pub const G711: CodecProfile = CodecProfile {
    name: "G711",
    ie: 0.0,
    bpl: 25.1,
    band: Band::Narrowband,
    packet_ms: 20,
    lookahead_ms: 0.0,
    provenance: Provenance::ItuTable,
    source: "G.113 Table I.1 Ie 0; Table I.3 Bpl 25.1 (G.711 with Appendix I PLC, random loss)",
};

/// G.711 without packet-loss concealment (lost packets played as silence).
pub const G711_NO_PLC: CodecProfile = CodecProfile {
    name: "G711-noPLC",
    bpl: 4.3,
    source: "G.113 Table I.1 Ie 0; Table I.3 Bpl 4.3 (G.711 without PLC, random loss)",
    ..G711
};

/// G.729 / G.729A (with or without Annex B VAD: G.113 gives one pair).
pub const G729: CodecProfile = CodecProfile {
    name: "G729",
    ie: 11.0,
    bpl: 19.0,
    band: Band::Narrowband,
    packet_ms: 20,
    lookahead_ms: 5.0,
    provenance: Provenance::ItuTable,
    source: "G.113 Table I.1 Ie 11; Table I.3 Bpl 19.0 (G.729A + VAD, random loss)",
};

/// G.723.1 at 6.3 kbit/s.
pub const G723: CodecProfile = CodecProfile {
    name: "G723",
    ie: 15.0,
    bpl: 16.1,
    band: Band::Narrowband,
    packet_ms: 30,
    lookahead_ms: 7.5,
    provenance: Provenance::ItuTable,
    source: "G.113 Table I.1 Ie 15; Table I.3 Bpl 16.1 (G.723.1 6.3 kbit/s + VAD), as recalled",
};

/// GSM full rate (GSM 06.10, RPE-LTP 13 kbit/s).
pub const GSM_FR: CodecProfile = CodecProfile {
    name: "GSM",
    ie: 20.0,
    bpl: 10.0,
    band: Band::Narrowband,
    packet_ms: 20,
    lookahead_ms: 0.0,
    provenance: Provenance::Estimate,
    source: "G.113 Table I.1 Ie 20 (GSM 06.10), as recalled; Bpl 10 is our estimate: we know \
             of no G.113 Bpl for GSM-FR",
};

/// AMR narrowband, scored as its 12.2 kbit/s mode.
pub const AMR: CodecProfile = CodecProfile {
    name: "AMR",
    ie: 5.0,
    bpl: 10.0,
    band: Band::Narrowband,
    packet_ms: 20,
    lookahead_ms: 5.0,
    provenance: Provenance::Estimate,
    source: "Ie 5 borrowed from GSM-EFR 12.2 kbit/s (G.113 Table I.1; AMR's 12.2 mode is the \
             same ACELP coder, and G.113 has no AMR-NB row); Bpl 10 is our estimate; the mode \
             actually used is not known from the codec name",
};

/// iLBC (RFC 3951), 30 ms mode.
pub const ILBC: CodecProfile = CodecProfile {
    name: "iLBC",
    ie: 11.0,
    bpl: 25.1,
    band: Band::Narrowband,
    packet_ms: 30,
    lookahead_ms: 10.0,
    provenance: Provenance::Estimate,
    source: "not in G.113 as far as we know: Ie 11 is a commonly quoted planning figure we \
             could not trace to an ITU table; Bpl 25.1 assumes iLBC's frame-independent \
             decoding conceals loss as well as G.711 with PLC",
};

/// Speex at 8 kHz.
pub const SPEEX_NB: CodecProfile = CodecProfile {
    name: "speex",
    ie: 11.0,
    bpl: 19.0,
    band: Band::Narrowband,
    packet_ms: 20,
    lookahead_ms: 10.0,
    provenance: Provenance::Estimate,
    source: "not in G.113: Ie 11 / Bpl 19 borrowed from G.729A (a CELP coder of similar rate) \
             as an estimate",
};

/// Speex at 16 or 32 kHz, scored on the wideband scale.
pub const SPEEX_WB: CodecProfile = CodecProfile {
    name: "speex-wb",
    ie: 20.0,
    bpl: 19.0,
    band: Band::Wideband,
    packet_ms: 20,
    lookahead_ms: 10.0,
    provenance: Provenance::Estimate,
    source: "not in G.113: Ie,wb 20 and Bpl,wb 19 are our estimates",
};

/// G.722 at 64 kbit/s (RTP clock 8000 Hz by RFC 3551, sampled at 16 kHz).
pub const G722: CodecProfile = CodecProfile {
    name: "G722",
    ie: 13.0,
    bpl: 25.1,
    band: Band::Wideband,
    packet_ms: 20,
    lookahead_ms: 1.5,
    provenance: Provenance::Borrowed,
    source: "Ie,wb 13 from G.113 Appendix IV Table IV.1 (G.722 64 kbit/s) as we recall it (one \
             vendor planning guide quotes 14); no Bpl,wb for G.722 was available to us, so Bpl \
             25.1 is borrowed from G.711 with PLC (G.113 Table I.3)",
};

/// AMR-WB (G.722.2), scored as its 12.65 kbit/s mode.
pub const AMR_WB: CodecProfile = CodecProfile {
    name: "AMR-WB",
    ie: 13.0,
    bpl: 4.3,
    band: Band::Wideband,
    packet_ms: 20,
    lookahead_ms: 5.0,
    provenance: Provenance::Estimate,
    source: "12.65 kbit/s mode assumed (the mode is not in the codec name): Ie,wb 13 (G.113 \
             Table IV.1) and Bpl,wb 4.3 (Table IV.4, diotic, uniform loss) as transcribed by a \
             third party; we could not check either against the Recommendation",
};

/// Opus, scored on the wideband scale.
pub const OPUS: CodecProfile = CodecProfile {
    name: "opus",
    ie: 10.0,
    bpl: 20.0,
    band: Band::Wideband,
    packet_ms: 20,
    lookahead_ms: 6.5,
    provenance: Provenance::Estimate,
    source: "no ITU Ie,wb/Bpl,wb for Opus was available to us: Ie,wb 10 and Bpl,wb 20 are our \
             estimates; fullband Opus would need G.107.2, which is not implemented",
};

/// Every codec the table knows.
pub const CODECS: [&CodecProfile; 12] = [
    &G711,
    &G711_NO_PLC,
    &G729,
    &G723,
    &GSM_FR,
    &AMR,
    &ILBC,
    &SPEEX_NB,
    &SPEEX_WB,
    &G722,
    &AMR_WB,
    &OPUS,
];

/// The profile for an SDP `a=rtpmap` encoding name (case-insensitive) and clock rate.
/// G.711 is assumed to run with packet-loss concealment (see [`G711_NO_PLC`]).
pub fn codec_profile(encoding: &str, clock_rate: u32) -> Option<&'static CodecProfile> {
    let name = encoding.trim();
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    if is("PCMU") || is("PCMA") || is("G711") {
        Some(&G711)
    } else if is("G729") || is("G729A") || is("G729AB") || is("G729B") {
        Some(&G729)
    } else if is("G723") {
        Some(&G723)
    } else if is("G722") {
        Some(&G722)
    } else if is("opus") {
        Some(&OPUS)
    } else if is("iLBC") {
        Some(&ILBC)
    } else if is("speex") {
        Some(if clock_rate >= 16_000 {
            &SPEEX_WB
        } else {
            &SPEEX_NB
        })
    } else if is("GSM") {
        Some(&GSM_FR)
    } else if is("AMR") {
        Some(&AMR)
    } else if is("AMR-WB") {
        Some(&AMR_WB)
    } else {
        None
    }
}

/// G.107 transmission parameters (Table 3 defaults from [`Default`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Transmission {
    /// Send loudness rating, dB.
    pub slr: f64,
    /// Receive loudness rating, dB.
    pub rlr: f64,
    /// Sidetone masking rating, dB.
    pub stmr: f64,
    /// Listener sidetone rating, dB.
    pub lstr: f64,
    /// D-value of the telephone, send side.
    pub ds: f64,
    /// D-value of the telephone, receive side.
    pub dr: f64,
    /// Talker echo loudness rating, dB.
    pub telr: f64,
    /// Weighted echo path loss, dB.
    pub wepl: f64,
    /// Quantizing distortion units.
    pub qdu: f64,
    /// Circuit noise referred to the 0 dBr point, dBm0p.
    pub nc: f64,
    /// Noise floor at the receive side, dBmp.
    pub nfor: f64,
    /// Room noise at the send side, dB(A).
    pub ps: f64,
    /// Room noise at the receive side, dB(A).
    pub pr: f64,
    /// Advantage factor.
    pub a: f64,
}

impl Default for Transmission {
    fn default() -> Self {
        Self {
            slr: 8.0,
            rlr: 2.0,
            stmr: 15.0,
            lstr: 18.0,
            ds: 3.0,
            dr: 3.0,
            telr: 65.0,
            wepl: 110.0,
            qdu: 1.0,
            nc: -70.0,
            nfor: -64.0,
            ps: 35.0,
            pr: 35.0,
            a: 0.0,
        }
    }
}

/// The parts of the delay impairment Id (G.107 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DelayImpairment {
    /// Talker echo.
    pub idte: f64,
    /// Listener echo.
    pub idle: f64,
    /// Absolute delay.
    pub idd: f64,
}

impl DelayImpairment {
    /// Id = Idte + Idle + Idd.
    pub fn total(&self) -> f64 {
        self.idte + self.idle + self.idd
    }
}

fn lg(x: f64) -> f64 {
    x.log10()
}

impl Transmission {
    /// Total noise power No (dBm0p), G.107 §7.2.
    pub fn no(&self) -> f64 {
        let olr = self.slr + self.rlr;
        let nos =
            self.ps - self.slr - self.ds - 100.0 + 0.004 * (self.ps - olr - self.ds - 14.0).powi(2);
        let pre = self.pr + 10.0 * lg(1.0 + 10f64.powf((10.0 - self.lstr) / 10.0));
        let nor = self.rlr - 121.0 + pre + 0.008 * (pre - 35.0).powi(2);
        let nfo = self.nfor + self.rlr;
        10.0 * lg(10f64.powf(self.nc / 10.0)
            + 10f64.powf(nos / 10.0)
            + 10f64.powf(nor / 10.0)
            + 10f64.powf(nfo / 10.0))
    }

    /// Basic signal-to-noise ratio Ro = 15 − 1.5 (SLR + No), G.107 §7.2.
    pub fn ro(&self) -> f64 {
        self.fixed().ro
    }

    /// What the delay-dependent formulas take from the fixed parameters.
    fn fixed(&self) -> Fixed {
        let no = self.no();
        let ro = 15.0 - 1.5 * (self.slr + no);
        let olr = self.slr + self.rlr;
        let xolr = olr + 0.2 * (64.0 + no - self.rlr);
        let iolr = 20.0 * ((1.0 + (xolr / 8.0).powi(8)).powf(1.0 / 8.0) - xolr / 8.0);
        let q = 37.0 - 15.0 * lg(self.qdu);
        let g = 1.07 + 0.258 * q + 0.0602 * q * q;
        let y = (ro - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0;
        let z = 46.0 / 30.0 - g / 40.0;
        let iq = 15.0 * lg(1.0 + 10f64.powf(y) + 10f64.powf(z));
        Fixed {
            no,
            ro,
            iolr,
            iq,
            stmr_lin: 10f64.powf(-self.stmr / 10.0),
            telr_lin: 10f64.powf(-self.telr / 10.0),
        }
    }

    /// Simultaneous impairment Is = Iolr + Ist + Iq (G.107 §7.3) for mean one-way delay `t_ms`
    /// of the echo path (it enters through STMRo).
    pub fn is(&self, t_ms: f64) -> f64 {
        self.is_with(&self.fixed(), t_ms)
    }

    fn is_with(&self, f: &Fixed, t_ms: f64) -> f64 {
        let stmro = -10.0 * lg(f.stmr_lin + (-t_ms / 4.0).exp() * f.telr_lin);
        let ist = 12.0 * (1.0 + ((stmro - 13.0) / 6.0).powi(8)).powf(1.0 / 8.0)
            - 28.0 * (1.0 + ((stmro + 1.0) / 19.4).powi(35)).powf(1.0 / 35.0)
            - 13.0 * (1.0 + ((stmro - 3.0) / 33.0).powi(13)).powf(1.0 / 13.0)
            + 29.0;
        f.iolr + ist + f.iq
    }

    /// Delay impairment Id (G.107 §7.4) for talker-echo delay `t_ms` (T), listener-echo
    /// round trip `tr_ms` (Tr) and absolute one-way delay `ta_ms` (Ta), with the default
    /// delay sensitivity (mT = 100 ms, sT = 1).
    pub fn id(&self, t_ms: f64, tr_ms: f64, ta_ms: f64) -> DelayImpairment {
        self.id_with(&self.fixed(), t_ms, tr_ms, ta_ms)
    }

    fn id_with(&self, f: &Fixed, t_ms: f64, tr_ms: f64, ta_ms: f64) -> DelayImpairment {
        let roe = -1.5 * (f.no - self.rlr);
        let terv = self.telr - 40.0 * lg((1.0 + t_ms / 10.0) / (1.0 + t_ms / 150.0))
            + 6.0 * (-0.3 * t_ms * t_ms).exp();
        let re = 80.0 + 2.5 * (terv - 14.0);
        let idte = ((roe - re) / 2.0 + ((roe - re).powi(2) / 4.0 + 100.0).sqrt() - 1.0)
            * (1.0 - (-t_ms).exp());
        let rle = 10.5 * (self.wepl + 7.0) * (tr_ms + 1.0).powf(-0.25);
        let idle = (f.ro - rle) / 2.0 + ((f.ro - rle).powi(2) / 4.0 + 169.0).sqrt();
        let idd = if ta_ms <= 100.0 {
            0.0
        } else {
            let x = ta_ms.log2() - 100f64.log2();
            25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0)
                - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
                + 2.0)
        };
        DelayImpairment { idte, idle, idd }
    }
}

/// The terms of the E-model that do not depend on the delay (G.107 §7.2, §7.3): some
/// thirty powers and logarithms, the same for every evaluation with the same parameters.
#[derive(Debug, Clone, Copy)]
struct Fixed {
    /// Total noise power No, dBm0p.
    no: f64,
    /// Basic signal-to-noise ratio Ro.
    ro: f64,
    /// Iolr, the impairment of a too-low overall loudness rating.
    iolr: f64,
    /// Iq, the quantizing distortion impairment.
    iq: f64,
    /// 10^(−STMR/10).
    stmr_lin: f64,
    /// 10^(−TELR/10).
    telr_lin: f64,
}

/// The default transmission parameters with their fixed terms, computed once: a live poll
/// scores every leg of every call under each jitter-buffer policy.
static DEFAULTS: std::sync::LazyLock<(Transmission, Fixed)> = std::sync::LazyLock::new(|| {
    let tx = Transmission::default();
    let fixed = tx.fixed();
    (tx, fixed)
});

/// Effective equipment impairment Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl/BurstR + Bpl)
/// (G.107 §7.6), with `ppl_pct` the packet-loss probability in percent.
pub fn ie_eff(ie: f64, bpl: f64, ppl_pct: f64, burst_r: f64) -> f64 {
    let ppl = sane_pct(ppl_pct);
    let burst_r = sane_burst_r(burst_r);
    if ppl == 0.0 {
        return ie;
    }
    ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)
}

/// MOS_CQE from a narrowband R (G.107 Annex B).
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        // The polynomial dips just below 1 for R < 6.5; a MOS below 1 means nothing.
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6).max(1.0)
    }
}

/// MOS_CQEW from a wideband R (G.107.1 Annex A: R_x = R_wb / 1.29, then Annex B of G.107).
pub fn mos_from_r_wideband(r_wb: f64) -> f64 {
    mos_from_r(r_wb / WB_SCALE)
}

/// BurstR from the kernel's loss-burst histogram (`bursts[i]` counts runs of `i + 1` lost
/// packets, the last bucket runs of 10 or more), per the two-state Markov model behind G.107
/// §7.6: with p = P(lost | previous received) and q = P(received | previous lost),
/// BurstR = 1 / (p + q). The mean run length L gives q = 1/L; the loss probability P = lost /
/// expected gives p = P·q / (1 − P) (the chain's stationary loss rate). Random loss has
/// L = 1/(1 − P), hence p + q = 1 and BurstR = 1.
///
/// Runs in the open bucket count as the loss they leave unexplained (at least 10 each).
/// With no loss, or no runs, BurstR = 1.
pub fn burst_ratio(lost: u64, expected: u64, bursts: &[u32]) -> f64 {
    let runs: u64 = bursts.iter().map(|&c| u64::from(c)).sum();
    if expected == 0 || lost == 0 || runs == 0 {
        return 1.0;
    }
    let mut short_lost = 0u64;
    let mut long_runs = 0u64;
    for (i, &c) in bursts.iter().enumerate() {
        if i + 1 < bursts.len() {
            short_lost += (i as u64 + 1) * u64::from(c);
        } else {
            long_runs = u64::from(c);
        }
    }
    let long_lost = if long_runs > 0 {
        lost.saturating_sub(short_lost)
            .max(bursts.len() as u64 * long_runs)
    } else {
        0
    };
    let mean_run = ((short_lost + long_lost) as f64 / runs as f64).max(1.0);
    let p_loss = (lost as f64 / expected as f64).min(0.999);
    let q = 1.0 / mean_run;
    let p = p_loss * q / (1.0 - p_loss);
    1.0 / (p + q)
}

fn sane_pct(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(0.0, 100.0)
    }
}

fn sane_burst_r(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        1.0
    }
}

/// One E-model evaluation, naming the model and every input it used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EModelResult {
    /// "ITU-T G.107" or "ITU-T G.107.1".
    pub model: &'static str,
    /// Narrowband or wideband scale (R and MOS are not comparable across them).
    pub band: Band,
    /// Codec name.
    pub codec: &'static str,
    /// How the codec's Ie/Bpl were obtained.
    pub provenance: Provenance,
    /// Equipment impairment factor used.
    pub ie: f64,
    /// Packet-loss robustness factor used.
    pub bpl: f64,
    /// Packet-loss probability, percent.
    pub ppl_pct: f64,
    /// Burst ratio.
    pub burst_r: f64,
    /// One-way mouth-to-ear delay, ms.
    pub ta_ms: f64,
    /// Delay impairment Id (Id,wb for wideband).
    pub id: f64,
    /// Effective equipment impairment Ie,eff.
    pub ie_eff: f64,
    /// Rating factor R (0..100 narrowband, 0..129 wideband).
    pub r: f64,
    /// MOS_CQE (narrowband) or MOS_CQEW (wideband).
    pub mos: f64,
}

/// Evaluates the E-model for `codec` with `ppl_pct` packet loss (percent, after the jitter
/// buffer), burst ratio `burst_r` and one-way delay `ta_ms`, all other parameters default.
pub fn evaluate(codec: &CodecProfile, ppl_pct: f64, burst_r: f64, ta_ms: f64) -> EModelResult {
    let ppl = sane_pct(ppl_pct);
    let burst_r = sane_burst_r(burst_r);
    // Beyond a minute the delay formulas stop meaning anything and start overflowing.
    let ta = if ta_ms.is_finite() {
        ta_ms.clamp(0.0, MAX_TA_MS)
    } else {
        0.0
    };
    let (tx, fixed) = &*DEFAULTS;
    let id_nb = tx.id_with(fixed, ta, 2.0 * ta, ta).total();
    let ie_eff = ie_eff(codec.ie, codec.bpl, ppl, burst_r);
    let (model, id, r, mos) = match codec.band {
        Band::Narrowband => {
            let r = fixed.ro - tx.is_with(fixed, ta) - id_nb - ie_eff + tx.a;
            ("ITU-T G.107", id_nb, r, mos_from_r(r))
        }
        Band::Wideband => {
            let id = WB_SCALE * id_nb;
            let r = (RO_WB - id - ie_eff + tx.a).clamp(0.0, RO_WB);
            ("ITU-T G.107.1", id, r, mos_from_r_wideband(r))
        }
    };
    EModelResult {
        model,
        band: codec.band,
        codec: codec.name,
        provenance: codec.provenance,
        ie: codec.ie,
        bpl: codec.bpl,
        ppl_pct: ppl,
        burst_r,
        ta_ms: ta,
        id,
        ie_eff,
        r,
        mos,
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    // G.107 §7.7: with all default values, R = 93.2 (Ro 94.77, Is 1.41, Id 0.15 at T = 0).
    #[test]
    fn defaults_give_r_93_2_and_mos_4_41() {
        let tx = Transmission::default();
        assert!(close(tx.ro(), 94.77, 0.005), "Ro {}", tx.ro());
        assert!(close(tx.is(0.0), 1.41, 0.005), "Is {}", tx.is(0.0));
        let res = evaluate(&G711, 0.0, 1.0, 0.0);
        assert!(close(res.r, 93.2, 0.01), "R {}", res.r);
        assert!(close(res.mos, 4.41, 0.005), "MOS {}", res.mos);
        assert_eq!(res.model, "ITU-T G.107");
        assert_eq!(res.ie_eff, 0.0);
    }

    // Id for Ta = 0, 150, 400 ms with T = Ta, Tr = 2T and Table 3 defaults, computed by hand
    // from the G.107 §7.4 formulas (evaluated independently in Python):
    //   Ta = 0:   Idte 0 (factor 1 − e^0 = 0); Rle = 10.5·117·1 = 1228.5,
    //             Idle = (94.769 − 1228.5)/2 + sqrt(1133.73²/4 + 169) = 0.1490; Idd 0.
    //   Ta = 150: TERV = 65 − 40·lg(16/2) + 0 = 28.876, Re = 117.191, Roe = 94.769,
    //             Idte = (−22.422/2 + sqrt(22.422²/4 + 100) − 1)·1 = 2.8118;
    //             Rle = 1228.5·301^−0.25 = 294.940, Idle = 0.8407;
    //             X = log2(1.5) = 0.585, Idd = 25·((1+X⁶)^⅙ − 3(1+(X/3)⁶)^⅙ + 2) = 0.1635;
    //             Id = 3.8161.
    //   Ta = 400: TERV = 23.060, Re = 102.649, Idte = 5.8082; Rle = 230.923, Idle = 1.2301;
    //             X = 2, Idd = 24.0701; Id = 31.1084.
    #[test]
    fn delay_impairment_matches_hand_computation() {
        let tx = Transmission::default();
        let cases = [
            (0.0, 0.0, 0.1490, 0.0, 0.1490),
            (150.0, 2.8118, 0.8407, 0.1635, 3.8161),
            (400.0, 5.8082, 1.2301, 24.0701, 31.1084),
        ];
        for (ta, idte, idle, idd, total) in cases {
            let d = tx.id(ta, 2.0 * ta, ta);
            assert!(close(d.idte, idte, 5e-4), "Ta {ta} Idte {}", d.idte);
            assert!(close(d.idle, idle, 5e-4), "Ta {ta} Idle {}", d.idle);
            assert!(close(d.idd, idd, 5e-4), "Ta {ta} Idd {}", d.idd);
            assert!(close(d.total(), total, 5e-4), "Ta {ta} Id {}", d.total());
        }
        // And through the whole model: R(150) = 89.54, R(400) = 62.25 (same hand computation).
        assert!(close(evaluate(&G711, 0.0, 1.0, 150.0).r, 89.539, 0.005));
        assert!(close(evaluate(&G711, 0.0, 1.0, 400.0).r, 62.247, 0.005));
    }

    // Annex B: MOS(50) = 1 + 1.75 − 50·10·50·7e-6 = 2.575; MOS(80) = 3.8 + 80·20·20·7e-6
    // = 4.024; MOS(93.2) = 4.262 + 93.2·33.2·6.8·7e-6 = 4.4093.
    #[test]
    fn mos_known_points() {
        assert!(close(mos_from_r(50.0), 2.575, 1e-9));
        assert!(close(mos_from_r(80.0), 4.024, 1e-9));
        assert!(close(mos_from_r(93.2), 4.4093, 1e-4));
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(3.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        // Wideband: R_wb 129 → R_x 100 → 4.5; R_wb 103.2 → R_x 80 → 4.024.
        assert!(close(mos_from_r_wideband(129.0), 4.5, 1e-9));
        assert!(close(mos_from_r_wideband(103.2), 4.024, 1e-9));
    }

    // G.711 with PLC (Bpl 25.1), 2 % random loss: Ie,eff = 95·2/(2 + 25.1) = 7.0111;
    // without PLC (Bpl 4.3): 95·2/(2 + 4.3) = 30.159.
    #[test]
    fn g711_two_percent_random_loss() {
        assert!(close(ie_eff(0.0, 25.1, 2.0, 1.0), 7.0111, 1e-4));
        assert!(close(ie_eff(0.0, 4.3, 2.0, 1.0), 30.1587, 1e-4));
        let res = evaluate(&G711, 2.0, 1.0, 0.0);
        assert!(close(res.r, 93.206 - 7.0111, 0.005), "R {}", res.r);
        // G.729A: 11 + 84·2/(2 + 19) = 19.0.
        assert!(close(ie_eff(11.0, 19.0, 2.0, 1.0), 19.0, 1e-9));
    }

    #[test]
    fn ten_percent_random_loss_is_well_below_4() {
        // Ie,eff = 95·10/35.1 = 27.07 → R ≈ 66.1 → MOS ≈ 3.41.
        let res = evaluate(&G711, 10.0, 1.0, 0.0);
        assert!(close(res.mos, 3.411, 0.005), "MOS {}", res.mos);
        assert!(close(res.ie_eff, 950.0 / 35.1, 1e-9));
        let no_plc = evaluate(&G711_NO_PLC, 10.0, 1.0, 0.0);
        assert!(no_plc.mos < 2.0, "MOS {}", no_plc.mos);
    }

    #[test]
    fn bursty_loss_scores_below_random_loss() {
        // 5 % loss in runs of 4: q = 1/4, p = 0.05·0.25/0.95 = 0.013158, BurstR = 3.8.
        let mut bursts = [0u32; 10];
        bursts[3] = 25; // 25 runs of 4 lost = 100 lost of 2000 expected.
        let br = burst_ratio(100, 2000, &bursts);
        assert!(close(br, 3.8, 1e-9), "BurstR {br}");
        let bursty = evaluate(&G711, 5.0, br, 0.0);
        let random = evaluate(&G711, 5.0, 1.0, 0.0);
        // Ie,eff 95·5/(5/3.8 + 25.1) = 17.98 against 95·5/30.1 = 15.78.
        assert!(close(bursty.ie_eff, 475.0 / (5.0 / 3.8 + 25.1), 1e-9));
        assert!(bursty.mos < random.mos);
    }

    #[test]
    fn burst_ratio_of_random_and_degenerate_patterns() {
        // Random loss at P = 0.1 has geometric runs of mean 1/(1 − P) = 10/9: 800 single
        // losses and 100 pairs are 1000 lost in 900 runs, of 10 000 expected.
        let mut b = [0u32; 10];
        b[0] = 800;
        b[1] = 100;
        assert!(close(burst_ratio(1000, 10_000, &b), 1.0, 1e-9));
        assert_eq!(burst_ratio(0, 100, &b), 1.0);
        assert_eq!(burst_ratio(10, 0, &b), 1.0);
        assert_eq!(burst_ratio(10, 100, &[0; 10]), 1.0);
        // One run of 30 in the open bucket: L = 30 from the unexplained loss.
        let mut long = [0u32; 10];
        long[9] = 1;
        let br = burst_ratio(30, 1000, &long);
        let q = 1.0 / 30.0;
        let p = 0.03 * q / 0.97;
        assert!(close(br, 1.0 / (p + q), 1e-9));
    }

    #[test]
    fn wideband_codecs_use_g107_1() {
        // G.722, no loss, no delay: R_wb = 129 − 1.29·0.1490 − 13 = 115.81, R_x = 89.77,
        // MOS = 1 + 3.142 + 89.77·29.77·10.23·7e-6 = 4.333.
        let res = evaluate(&G722, 0.0, 1.0, 0.0);
        assert_eq!(res.model, "ITU-T G.107.1");
        assert_eq!(res.band, Band::Wideband);
        assert!(close(res.r, 115.808, 0.005), "R {}", res.r);
        assert!(close(res.mos, 4.333, 0.005), "MOS {}", res.mos);
        // Total loss cannot push R below 0.
        let worst = evaluate(&G722, 100.0, 1.0, 1000.0);
        assert!(worst.r >= 0.0 && worst.mos >= 1.0);
    }

    #[test]
    fn rtpmap_names_map_case_insensitively() {
        let cases = [
            ("PCMU", 8000, "G711"),
            ("pcma", 8000, "G711"),
            ("G729", 8000, "G729"),
            ("g722", 8000, "G722"),
            ("opus", 48000, "opus"),
            ("OPUS", 48000, "opus"),
            ("iLBC", 8000, "iLBC"),
            ("ILBC", 8000, "iLBC"),
            ("speex", 8000, "speex"),
            ("SPEEX", 16000, "speex-wb"),
            ("GSM", 8000, "GSM"),
            ("AMR", 8000, "AMR"),
            ("amr-wb", 16000, "AMR-WB"),
            ("G723", 8000, "G723"),
        ];
        for (name, rate, want) in cases {
            assert_eq!(
                codec_profile(name, rate).map(|c| c.name),
                Some(want),
                "{name}"
            );
        }
        assert!(codec_profile("telephone-event", 8000).is_none());
        assert!(codec_profile("H264", 90000).is_none());
        assert_eq!(codec_profile("G722", 8000).unwrap().band, Band::Wideband);
        assert_eq!(codec_profile("AMR", 8000).unwrap().band, Band::Narrowband);
    }

    #[test]
    fn bad_inputs_are_sanitised() {
        let res = evaluate(&G711, f64::NAN, f64::NAN, f64::INFINITY);
        assert_eq!((res.ppl_pct, res.burst_r, res.ta_ms), (0.0, 1.0, 0.0));
        assert!(close(res.r, 93.2, 0.01));
        assert_eq!(evaluate(&G711, 250.0, -1.0, -5.0).ppl_pct, 100.0);
    }
}
