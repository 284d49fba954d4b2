//! The kernel's L2..L4 parser on arbitrary frames: never panics, never reads out of bounds,
//! and the offsets it returns lie inside the frame.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| collector::fuzzing::l2l4(data));
