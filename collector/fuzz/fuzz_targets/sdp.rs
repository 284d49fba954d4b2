//! SDP bodies: the parser and its helpers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| collector::fuzzing::sdp(data));
