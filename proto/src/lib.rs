//! Generated gRPC/protobuf code of the `collector.v1` API: the CDR (`Cdr`), agent → collector
//! ingestion with acknowledgements (`Ingest`), CDR queries (`Query`), live flows (`Watch`) and
//! administration (`Admin`), plus serde support so records print as JSON with the proto field
//! names.
//!
//! The `.proto` sources live in `proto/collector/v1/`; they are compiled by `build.rs` with
//! `protox` (no system `protoc` needed). The standard `grpc.health.v1` service comes from the
//! `tonic-health` crate on the server side.

/// The `collector` proto package namespace.
pub mod collector {
    /// Version 1 of the API (`package collector.v1`).
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        reason = "generated code is not held to the workspace's hand-written style"
    )]
    pub mod v1 {
        tonic::include_proto!("collector.v1");
    }
}

pub use collector::v1;

/// Serialized `FileDescriptorSet` of every `collector.v1` file (for gRPC reflection or
/// dynamic decoding).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/collector_v1_descriptor.bin"));

/// Serde adapters for enum-typed fields: prost stores them as `i32`; in JSON they appear as
/// their proto value name (e.g. `"DISPOSITION_ANSWERED"`), and numbers that this build does
/// not know are kept as numbers so nothing is lost.
pub mod enum_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrNumber {
        Name(String),
        Number(i32),
    }

    macro_rules! adapter {
        ($module:ident, $ty:path) => {
            #[doc = concat!("JSON form of a `", stringify!($ty), "` field.")]
            pub mod $module {
                use super::*;
                use $ty as E;

                /// Serializes the value name, or the number when unknown.
                pub fn serialize<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
                    match E::try_from(*v) {
                        Ok(e) => s.serialize_str(e.as_str_name()),
                        Err(_) => s.serialize_i32(*v),
                    }
                }

                /// Accepts the value name or a number.
                pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
                    match NameOrNumber::deserialize(d)? {
                        NameOrNumber::Number(n) => Ok(n),
                        NameOrNumber::Name(name) => {
                            E::from_str_name(&name).map(|e| e as i32).ok_or_else(|| {
                                serde::de::Error::custom(format!(
                                    "unknown {} value {name:?}",
                                    stringify!($module)
                                ))
                            })
                        }
                    }
                }
            }
        };
    }

    adapter!(disposition, crate::v1::Disposition);
    adapter!(hangup_side, crate::v1::HangupSide);
    adapter!(media_direction, crate::v1::MediaDirection);
    adapter!(call_state_kind, crate::v1::CallStateKind);
    adapter!(alert_severity, crate::v1::AlertSeverity);
    adapter!(lost_events_source, crate::v1::LostEventsSource);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::v1::{Cdr, Disposition, Party};
    use prost::Message as _;

    /// Wire bytes written by hand from the protobuf encoding spec (field number << 3 | wire
    /// type), independent of prost: a Cdr with agent_id "a" (1), caller.user "u" (5.1),
    /// start_time_ms 300 (12, varint 0xAC 0x02) and disposition ANSWERED (19 = 1).
    const WIRE: &[u8] = &[
        0x0a, 0x01, b'a', // 1: agent_id = "a"
        0x2a, 0x03, 0x0a, 0x01, b'u', // 5: caller { 1: user = "u" }
        0x60, 0xac, 0x02, // 12: start_time_ms = 300
        0x98, 0x01, 0x01, // 19: disposition = 1 (tag 19<<3|0 = 152 = 0x98 0x01)
    ];

    #[test]
    fn cdr_field_numbers_match_the_wire_format() {
        let cdr = Cdr::decode(WIRE).unwrap();
        assert_eq!(cdr.agent_id, "a");
        assert_eq!(cdr.caller.as_ref().unwrap().user, "u");
        assert_eq!(cdr.start_time_ms, 300);
        assert_eq!(cdr.disposition(), Disposition::Answered);
        assert_eq!(cdr.encode_to_vec(), WIRE);
    }

    #[test]
    fn json_uses_proto_field_names_and_enum_value_names() {
        let cdr = Cdr {
            caller: Some(Party {
                user: "p1".into(),
                ..Default::default()
            }),
            disposition: Disposition::Busy as i32,
            billable_ms: 7,
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&cdr).unwrap();
        assert_eq!(v["caller"]["user"], "p1");
        assert_eq!(v["disposition"], "DISPOSITION_BUSY");
        assert_eq!(v["billable_ms"], 7);
        assert_eq!(v["hangup_side"], "HANGUP_SIDE_UNKNOWN");
        // Missing fields default, names and numbers are both accepted.
        let back: Cdr =
            serde_json::from_str(r#"{"disposition":"DISPOSITION_REJECTED","final_code":403}"#)
                .unwrap();
        assert_eq!(back.disposition(), Disposition::Rejected);
        assert_eq!(back.final_code, 403);
        let back: Cdr = serde_json::from_str(r#"{"disposition":4}"#).unwrap();
        assert_eq!(back.disposition(), Disposition::Cancelled);
        assert!(serde_json::from_str::<Cdr>(r#"{"disposition":"NOPE"}"#).is_err());
    }
}
