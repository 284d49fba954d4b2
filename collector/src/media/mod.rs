//! Media quality: RTCP parsing (RFC 3550 §6, RFC 3611, RFC 5506), the ITU-T G.107 / G.107.1
//! E-model, a jitter-buffer simulation, and their combination with the kernel's per-SSRC RTP
//! statistics (RFC 3550 A.1/A.8, kept in `collector_common::media::RtpStream`) into a
//! per-direction quality result.
//!
//! Everything here is pure: inputs are bytes, counters and injected times; nothing does I/O,
//! reads a clock or logs, so the same code scores a live call and an offline replay.

pub mod emodel;
pub mod interval;
pub mod jitterbuf;
pub mod quality;
pub mod rtcp;

#[cfg(test)]
mod testutil;
