//! RTCP compound packets (RFC 3550 §6.4.1 validation), both framing options.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| collector::fuzzing::rtcp(data));
