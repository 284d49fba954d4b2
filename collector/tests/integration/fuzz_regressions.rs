//! Every input saved under `collector/fuzz/regressions/<target>/` (crashes the fuzzers found,
//! and hand-made cases of bugs found by reading) runs through its target's body again.
use std::path::PathBuf;

#[test]
fn saved_fuzz_inputs_no_longer_fail() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut ran = 0;
    for (name, body) in collector::fuzzing::TARGETS {
        let Ok(dir) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for entry in dir.flatten() {
            let data = std::fs::read(entry.path()).unwrap_or_default();
            body(&data);
            ran += 1;
        }
    }
    assert!(ran >= 2, "the regression inputs are missing ({ran} found)");
}
