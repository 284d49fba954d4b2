//! Compiles `proto/collector/v1/*.proto` with `protox` (pure Rust: no system `protoc`) and
//! generates the prost messages and tonic services from the resulting descriptor set.
use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &[
    "collector/v1/cdr.proto",
    "collector/v1/ingest.proto",
    "collector/v1/query.proto",
    "collector/v1/watch.proto",
    "collector/v1/admin.proto",
];

/// Enum-typed fields, serialized in JSON by their proto value name rather than the number.
const ENUM_FIELDS: &[(&str, &str)] = &[
    (".collector.v1.Cdr.disposition", "disposition"),
    (".collector.v1.Cdr.hangup_side", "hangup_side"),
    (".collector.v1.MediaLeg.direction", "media_direction"),
    (".collector.v1.CdrQuery.disposition", "disposition"),
    (".collector.v1.Call.disposition", "disposition"),
    (".collector.v1.CallState.state", "call_state_kind"),
    (".collector.v1.CallState.disposition", "disposition"),
    (".collector.v1.Alert.severity", "alert_severity"),
    (".collector.v1.LostEvents.source", "lost_events_source"),
    (".collector.v1.SipMessage.direction", "sip_direction"),
];

/// Large messages held by a variant of a small one, boxed: a live `FlowEvent` is otherwise
/// as large as its largest variant (a media leg, about a kilobyte), and every event the
/// agent queues or the hub keeps would pay for it.
const BOXED: &[&str] = &[
    ".collector.v1.MediaStats.leg",
    ".collector.v1.CallState.cdr",
];

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("collector_v1_descriptor.bin"), fds.encode_to_vec())?;

    let mut b = tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .message_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        .enum_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .enum_attribute(".", "#[serde(rename_all = \"snake_case\")]");
    for path in BOXED {
        b = b.boxed(path);
    }
    for (path, module) in ENUM_FIELDS {
        b = b.field_attribute(
            path,
            format!("#[serde(with = \"crate::enum_serde::{module}\")]"),
        );
    }
    b.compile_fds(fds)?;
    Ok(())
}
