//! SIP: one datagram through the parser and every typed accessor, and the stream framer.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| collector::fuzzing::sip(data));
