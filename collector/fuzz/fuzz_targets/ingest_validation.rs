//! The server's validation of an Ingest request decoded from arbitrary wire bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| collector::fuzzing::ingest_validation(data));
