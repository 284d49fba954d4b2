//! The spool's frame scanner on arbitrary segment bytes (a corrupt or hostile spool file).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| collector::fuzzing::spool_frames(data));
