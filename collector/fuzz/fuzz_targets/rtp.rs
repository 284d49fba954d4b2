//! The shared RTP update (kernel and replay) on arbitrary packet sequences: no panic, no
//! overflow trap, whatever the sequence numbers, timestamps, SSRCs and arrival times.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| collector::fuzzing::rtp(data));
