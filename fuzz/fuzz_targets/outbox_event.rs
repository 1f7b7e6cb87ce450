//! Events as the outbox stores them (the JSON of `EventKind`, what the relay reads back)
//! and as consumers read them off Kafka (`tenant.v1.TenantEvent`): anything either
//! decodes or is refused; what decodes encodes and decodes again to the same event.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tenantd_domain::{Event, EventId, EventKind, Subject, TenantId};
use tenantd_server::proto;
use uuid::Uuid;

/// `api_key_created` as `ApiKeyCreated`.
fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(kind) = serde_json::from_slice::<EventKind>(data) {
        let stored = serde_json::to_vec(&kind).expect("an event kind serializes");
        let read: EventKind = serde_json::from_slice(&stored).expect("its own JSON decodes");
        assert_eq!(read, kind, "stored and read back differ");
        let tag = serde_json::from_slice::<serde_json::Value>(&stored).expect("JSON")["type"]
            .as_str()
            .map(pascal_case)
            .expect("a stored event has a type tag");
        assert_eq!(
            format!("tenant.v1.{tag}"),
            kind.type_name(),
            "the stored type tag and the relayed type name differ"
        );
        let tenant =
            TenantId::from_uuid(Uuid::from_u128(0x0193_6f5e_8f3a_7b2c_9d4e_5f6a_7b8c_9d0e))
                .expect("a UUIDv7");
        let event = Event {
            id: EventId(Uuid::from_u128(0x0193_6f5e_8f3a_7b2c_9d4e_0000_0000_0001)),
            subject: Subject::Tenant(tenant),
            occurred_at: DateTime::<Utc>::UNIX_EPOCH,
            kind,
        };
        let relayed = proto::TenantEvent::from(&event);
        assert!(relayed.payload.is_some(), "every event has a payload");
        let wire = relayed.encode_to_vec();
        assert_eq!(
            proto::TenantEvent::decode(wire.as_slice()).ok(),
            Some(relayed)
        );
    }
    if let Ok(message) = proto::TenantEvent::decode(data) {
        let wire = message.encode_to_vec();
        assert_eq!(
            proto::TenantEvent::decode(wire.as_slice()).ok(),
            Some(message)
        );
    }
});
