//! The privacy boundary: every identifier of a CDR and of flow events leaves protected as
//! the policy says (the default policy of `PrivacyConfig`: users, domains and Call-IDs
//! pseudonymized, display names dropped, addresses truncated to /24, user agents kept),
//! pseudonyms are those erasure looks up, a declined subscriber leaves no identifier, and the
//! inventory lists exactly the fields of the CDR message.
use collector_proto::v1::{
    flow_event, CallState, Cdr, Coverage, FlowEvent, MediaLeg, Party, Reason, Registration,
};
use time::OffsetDateTime;

use super::*;
use crate::privacy::{
    inventory::CDR_FIELDS,
    keys::{Key, KeyId, Secret},
    KeyRing, Kind, PrivacyConfig,
};

fn pz(toml: &str) -> Pseudonymizer {
    let config = PrivacyConfig::from_agent_toml(toml).unwrap();
    let key = Key::new(
        KeyId::try_new("k1").unwrap(),
        Secret::from_bytes([9; 32]),
        OffsetDateTime::UNIX_EPOCH,
        true,
    );
    Pseudonymizer::try_new(&config, KeyRing::try_new(vec![key]).unwrap()).unwrap()
}

const POLICY: &str = "[privacy]\nscope = \"tenant-1\"\n\
                      consent = { header = \"X-Consent\", declined = [\"declined\"] }\n";

fn party(user: &str, domain: &str, display: &str) -> Option<Party> {
    Some(Party {
        user: user.into(),
        domain: domain.into(),
        display: display.into(),
    })
}

fn cdr() -> Cdr {
    Cdr {
        agent_id: "sbc-1".into(),
        cdr_id: "id-1".into(),
        call_id: "leg-b@10.0.0.1".into(),
        correlation_id: "leg-a@10.0.0.1".into(),
        caller: party("+441632960001", "example.com", "Alice Example"),
        callee: party("bob", "192.0.2.77", "Bob"),
        src_ip: "192.0.2.10".into(),
        src_port: 5060,
        dst_ip: "2001:db8::1".into(),
        dst_port: 5060,
        transport: "UDP".into(),
        start_time_ms: 1,
        final_code: 200,
        reason: Some(Reason {
            protocol: "Q.850".into(),
            cause: 16,
            text: "Normal call clearing".into(),
        }),
        codecs: vec!["PCMA".into()],
        media: vec![MediaLeg {
            src_ip: "192.0.2.10".into(),
            src_port: 4000,
            dst_ip: "198.51.100.20".into(),
            dst_port: 5000,
            packets: 250,
            codec: "PCMA".into(),
            ..MediaLeg::default()
        }],
        user_agent_caller: "PhoneA/1.0".into(),
        user_agent_callee: "PBX/2.0".into(),
        coverage: Some(Coverage {
            complete: true,
            ..Coverage::default()
        }),
        consent: String::new(),
        sip_messages: 7,
        ..Cdr::default()
    }
}

/// Clear identifiers of [`cdr`] that must not survive the default policy.
const CLEAR: [&str; 10] = [
    "+441632960001",
    "441632960001",
    "example.com",
    "Alice",
    "Bob",
    "192.0.2.10",
    "192.0.2.77",
    "198.51.100.20",
    "leg-a@",
    "leg-b@",
];

#[test]
fn default_policy_protects_every_identifier() {
    let pz = pz(POLICY);
    let consent = consent_of(&pz, Some("X-Consent"), "");
    let mut c = cdr();
    apply_cdr(&pz.call(consent), &mut c);
    // The pseudonyms are those erasure looks up under the active key.
    let caller = c.caller.as_ref().unwrap();
    assert_eq!(caller.user, pz.pseudonyms_for(b"+441632960001")[0]);
    assert_eq!(
        caller.domain,
        pz.pseudonyms_for_kind(Kind::Domain, b"example.com")[0]
    );
    assert_eq!(caller.display, "", "display names are dropped by default");
    let callee = c.callee.as_ref().unwrap();
    assert_eq!(
        callee.user,
        pz.pseudonyms_for_kind(Kind::UriUser, b"bob")[0]
    );
    // An IP literal domain follows the ip policy.
    assert_eq!(callee.domain, "192.0.2.0/24");
    assert_eq!(c.src_ip, "192.0.2.0/24");
    assert_eq!(c.dst_ip, "2001:db8::/48");
    assert_eq!(c.media[0].src_ip, "192.0.2.0/24");
    assert_eq!(c.media[0].dst_ip, "198.51.100.0/24");
    assert_eq!(
        c.call_id,
        pz.pseudonyms_for_kind(Kind::CallId, b"leg-b@10.0.0.1")[0]
    );
    // The correlation id is the first leg's Call-ID: both legs show the same pseudonym.
    assert_eq!(
        c.correlation_id,
        pz.pseudonyms_for_kind(Kind::CallId, b"leg-a@10.0.0.1")[0]
    );
    assert_eq!(
        (c.user_agent_caller.as_str(), c.user_agent_callee.as_str()),
        ("PhoneA/1.0", "PBX/2.0")
    );
    assert_eq!(c.consent, CONSENT_APPLIED);
    // Technical and quality fields are untouched.
    assert_eq!(
        (c.final_code, c.media[0].packets, c.sip_messages),
        (200, 250, 7)
    );
    assert_eq!(c.reason.as_ref().unwrap().cause, 16);
    let json = serde_json::to_string(&c).unwrap();
    for clear in CLEAR {
        assert!(!json.contains(clear), "{clear} leaked: {json}");
    }
}

#[test]
fn declined_consent_drops_every_identifier() {
    let pz = pz(POLICY);
    let consent = consent_of(&pz, Some("X-Consent"), "Declined;reason=user");
    assert_eq!(consent, Consent::Declined);
    let mut c = cdr();
    apply_cdr(&pz.call(consent), &mut c);
    assert_eq!(c.consent, CONSENT_DECLINED);
    for v in [
        &c.call_id,
        &c.correlation_id,
        &c.src_ip,
        &c.dst_ip,
        &c.user_agent_caller,
        &c.user_agent_callee,
        &c.media[0].src_ip,
        &c.media[0].dst_ip,
    ] {
        assert_eq!(v, "");
    }
    for p in [c.caller.as_ref().unwrap(), c.callee.as_ref().unwrap()] {
        assert_eq!(
            (p.user.as_str(), p.domain.as_str(), p.display.as_str()),
            ("", "", "")
        );
    }
    assert_eq!((c.final_code, c.media[0].packets), (200, 250));
    // Without a configured header nobody is treated as declined.
    assert_eq!(consent_of(&pz, None, "declined"), Consent::NotDeclined);
    let no_header = self::pz("[privacy]\nscope = \"t\"\n");
    assert_eq!(
        consent_of(&no_header, Some("X-Consent"), "declined"),
        Consent::NotDeclined
    );
}

#[test]
fn keep_policies_pass_values_through() {
    let pz = pz("[privacy]\nscope = \"t\"\n[privacy.fields]\ncaller_user = \"keep\"\n\
                 display_name = \"keep\"\nip = \"keep\"\ncall_id = \"drop\"\nuser_agent = \"drop\"\n");
    let mut c = cdr();
    apply_cdr(&pz.call(Consent::NotDeclined), &mut c);
    let caller = c.caller.as_ref().unwrap();
    assert_eq!(caller.user, "+441632960001");
    assert_eq!(caller.display, "Alice Example");
    assert_eq!(c.src_ip, "192.0.2.10");
    assert_eq!((c.call_id.as_str(), c.correlation_id.as_str()), ("", ""));
    assert_eq!(c.user_agent_caller, "");
}

#[test]
fn flow_events_are_protected_too() {
    let pz = pz(POLICY);
    let cp = pz.call(Consent::NotDeclined);
    let mut state = FlowEvent {
        tenant: String::new(),
        time_ms: 1,
        agent_id: "sbc-1".into(),
        call_id: "leg-a@10.0.0.1".into(),
        event: Some(flow_event::Event::CallState(CallState {
            caller: party("+441632960001", "example.com", "Alice"),
            callee: party("bob", "example.net", ""),
            cdr: Some(Box::new(cdr())),
            ..CallState::default()
        })),
    };
    apply_flow(&cp, &mut state);
    let mut reg = FlowEvent {
        call_id: "reg-1".into(),
        event: Some(flow_event::Event::Registration(Registration {
            aor: party("+441632960001", "example.com", ""),
            status_code: 200,
            expires_s: 60,
            contact_count: 1,
        })),
        ..FlowEvent::default()
    };
    apply_flow(&cp, &mut reg);
    for ev in [&state, &reg] {
        let json = serde_json::to_string(ev).unwrap();
        for clear in CLEAR {
            assert!(!json.contains(clear), "{clear} leaked: {json}");
        }
    }
    assert_eq!(
        state.call_id,
        pz.pseudonyms_for_kind(Kind::CallId, b"leg-a@10.0.0.1")[0]
    );
    match &reg.event {
        Some(flow_event::Event::Registration(r)) => {
            assert_eq!(
                r.aor.as_ref().unwrap().user,
                pz.pseudonyms_for(b"+441632960001")[0]
            );
            assert_eq!(r.status_code, 200);
        }
        other => panic!("{other:?}"),
    }
}

/// Just enough of `google.protobuf.FileDescriptorSet` (descriptor.proto field numbers) to
/// list message fields.
mod descriptor {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileDescriptorSet {
        #[prost(message, repeated, tag = "1")]
        pub file: Vec<FileDescriptorProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileDescriptorProto {
        #[prost(string, optional, tag = "2")]
        pub package: Option<String>,
        #[prost(message, repeated, tag = "4")]
        pub message_type: Vec<DescriptorProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DescriptorProto {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(message, repeated, tag = "2")]
        pub field: Vec<FieldDescriptorProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FieldDescriptorProto {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(int32, optional, tag = "4")]
        pub label: Option<i32>,
        #[prost(int32, optional, tag = "5")]
        pub r#type: Option<i32>,
        #[prost(string, optional, tag = "6")]
        pub type_name: Option<String>,
    }
    /// FieldDescriptorProto.Type.TYPE_STRING.
    pub const TYPE_STRING: i32 = 9;
    /// FieldDescriptorProto.Type.TYPE_MESSAGE.
    pub const TYPE_MESSAGE: i32 = 11;
    /// FieldDescriptorProto.Label.LABEL_REPEATED.
    pub const LABEL_REPEATED: i32 = 3;
}

/// The inventory names the proto's CDR must have. Every string can hold an identifier, so
/// every string leaf is listed by its own name (`caller_user`, `media_src_ip`); a nested
/// message is flattened (`reason_cause`), except that a message without strings may be one
/// row (`coverage`) and a repeated message is one row for its numbers (`media`) plus one
/// per string, a string nested deeper named by its path (`ladder_message_from`).
fn expected_inventory_names() -> Vec<String> {
    use descriptor::*;
    use prost::Message as _;
    let fds = FileDescriptorSet::decode(collector_proto::FILE_DESCRIPTOR_SET).unwrap();
    let messages: Vec<&DescriptorProto> = fds
        .file
        .iter()
        .filter(|f| f.package.as_deref() == Some("collector.v1"))
        .flat_map(|f| f.message_type.iter())
        .collect();
    let message = |full: &str| -> &DescriptorProto {
        let short = full.trim_start_matches(".collector.v1.");
        messages
            .iter()
            .find(|m| m.name.as_deref() == Some(short))
            .unwrap_or_else(|| panic!("no message {full}"))
    };
    // Every string leaf of a message, nested messages included, by its path of field names.
    fn strings<'a>(
        m: &'a DescriptorProto,
        prefix: &str,
        message: &dyn Fn(&str) -> &'a DescriptorProto,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for f in &m.field {
            let name = format!("{prefix}_{}", f.name.as_deref().unwrap());
            match f.r#type {
                Some(TYPE_STRING) => out.push(name),
                Some(TYPE_MESSAGE) => out.extend(strings(
                    message(f.type_name.as_deref().unwrap()),
                    &name,
                    message,
                )),
                _ => {}
            }
        }
        out
    }
    let cdr = message(".collector.v1.Cdr");
    let mut names = Vec::new();
    for f in &cdr.field {
        let name = f.name.clone().unwrap();
        if f.r#type != Some(TYPE_MESSAGE) {
            names.push(name);
            continue;
        }
        let m = message(f.type_name.as_deref().unwrap());
        let strings = strings(m, &name, &message);
        if strings.is_empty() {
            names.push(name);
        } else if f.label == Some(LABEL_REPEATED) {
            names.push(name);
            names.extend(strings);
        } else {
            names.extend(
                m.field
                    .iter()
                    .map(|s| format!("{name}_{}", s.name.as_deref().unwrap())),
            );
        }
    }
    names
}

#[test]
fn inventory_lists_exactly_the_cdr_fields_of_the_proto() {
    let mut expected = expected_inventory_names();
    let mut listed: Vec<String> = CDR_FIELDS.iter().map(|f| f.name.to_owned()).collect();
    // A sanity check that the descriptor was read: fields known from cdr.proto.
    for known in [
        "call_id",
        "caller_user",
        "reason_cause",
        "media_src_ip",
        "coverage",
        "sip_messages",
    ] {
        assert!(expected.iter().any(|e| e == known), "{known}: {expected:?}");
    }
    expected.sort();
    listed.sort();
    let missing: Vec<&String> = expected.iter().filter(|e| !listed.contains(e)).collect();
    let extra: Vec<&String> = listed.iter().filter(|l| !expected.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not in the inventory: {missing:?}; not in the proto: {extra:?}"
    );
}

#[test]
fn billing_writes_the_destination_prefix_and_nothing_else_does() {
    let rates = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/billing/rates.csv");
    let billing = pz(&format!(
        "{POLICY}billing_rates = {rates:?}\n\
         national = {{ country_code = \"44\", trunk_prefix = \"0\" }}\n\
         [privacy.fields]\ncallee_user = \"billing\"\n"
    ));
    let with_callee = |user: &str, prefix: &str| Cdr {
        callee: party(user, "example.net", ""),
        // A value the tracker never writes: the boundary must overwrite it.
        destination_prefix: prefix.into(),
        ..cdr()
    };
    // +447700 is a row of rates.csv (read by hand); the number is only pseudonymized.
    let mut c = with_callee("07700 900123", "");
    apply_cdr(&billing.call(Consent::NotDeclined), &mut c);
    assert_eq!(c.destination_prefix, "+447700");
    assert_eq!(
        c.callee.as_ref().unwrap().user,
        billing.pseudonyms_for(b"+447700900123")[0]
    );
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("7700900123"), "{json}");
    // Declined: no prefix either.
    let mut c = with_callee("07700 900123", "");
    apply_cdr(&billing.call(Consent::Declined), &mut c);
    assert_eq!(c.destination_prefix, "");
    // Not a number: no prefix.
    let mut c = with_callee("bob", "");
    apply_cdr(&billing.call(Consent::NotDeclined), &mut c);
    assert_eq!(c.destination_prefix, "");
    // Under the default policy the field stays empty, whatever it held.
    let mut c = with_callee("+447700900123", "+447700900123");
    apply_cdr(&pz(POLICY).call(Consent::NotDeclined), &mut c);
    assert_eq!(c.destination_prefix, "");
}
