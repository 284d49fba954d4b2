//! The decoder facade: IP fragment, TCP and WebSocket reassembly over a stream of
//! arbitrary frames (length-prefixed in the input) with advancing time.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| collector::fuzzing::reassembly(data));
