//! Property tests of event encoding: any event survives the outbox (its stored JSON, read
//! back by the relay) and the wire (`tenant.v1.TenantEvent`, as consumers decode it), and
//! its relayed payload is the one its type names.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use prost::Message as _;
use tenantd_domain::provisioning::{StepError, StepKind, StepState};
use tenantd_domain::{Event, EventId, EventKind, Subject, TenantId, TenantStatus};
use uuid::Uuid;

use crate::proto;

fn text() -> impl Strategy<Value = String> {
    any::<String>()
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (0_i64..4_102_444_800, 0_u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in range"))
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(text(), text(), 0..4)
}

fn step() -> impl Strategy<Value = StepKind> {
    prop::sample::select(vec![
        StepKind::Database,
        StepKind::Dns,
        StepKind::Credentials,
        StepKind::Billing,
        StepKind::Notification,
    ])
}

fn error() -> impl Strategy<Value = StepError> {
    (text(), text(), any::<bool>()).prop_map(|(reason, message, permanent)| StepError {
        reason,
        message,
        permanent,
    })
}

fn kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        (text(), text(), text(), labels()).prop_map(|(slug, display_name, plan_id, labels)| {
            EventKind::TenantCreated {
                slug,
                display_name,
                plan_id,
                labels,
            }
        }),
        (
            prop::collection::vec(text(), 0..4),
            text(),
            text(),
            labels()
        )
            .prop_map(|(changed_fields, plan_id, display_name, labels)| {
                EventKind::TenantUpdated {
                    changed_fields,
                    plan_id,
                    display_name,
                    labels,
                }
            }),
        text().prop_map(|plan_id| EventKind::TenantActivated { plan_id }),
        text().prop_map(|reason| EventKind::TenantSuspended { reason }),
        Just(EventKind::TenantResumed),
        time().prop_map(|purge_at| EventKind::TenantDeleted { purge_at }),
        prop::sample::select(TenantStatus::ALL.to_vec())
            .prop_map(|status| EventKind::TenantUndeleted { status }),
        text().prop_map(|reason| EventKind::TenantLegalHoldSet { reason }),
        (text(), prop::option::of(time())).prop_map(|(reason, purge_at)| {
            EventKind::TenantLegalHoldReleased { reason, purge_at }
        }),
        any::<bool>().prop_map(|forced| EventKind::TenantPurgeStarted { forced }),
        Just(EventKind::TenantPurged),
        (text(), prop::collection::vec(text(), 0..4))
            .prop_map(|(key_id, scopes)| EventKind::ApiKeyCreated { key_id, scopes }),
        text().prop_map(|key_id| EventKind::ApiKeyRevoked { key_id }),
        (
            text(),
            step(),
            prop::sample::select(StepState::ALL.to_vec()),
            any::<u32>(),
            prop::option::of(error())
        )
            .prop_map(|(run_id, step, state, attempt, error)| {
                EventKind::ProvisioningStepChanged {
                    run_id,
                    step,
                    state,
                    attempt,
                    error,
                }
            }),
        (text(), step(), error()).prop_map(|(run_id, failed_step, error)| {
            EventKind::ProvisioningFailed {
                run_id,
                failed_step,
                error,
            }
        }),
        (text(), text())
            .prop_map(|(run_id, reason)| EventKind::ProvisioningCancelled { run_id, reason }),
        (text(), text()).prop_map(|(slug, display_name)| {
            EventKind::WelcomeNotificationRequested { slug, display_name }
        }),
        (text(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
            |(rollout_id, from_version, to_version, duration_ms)| {
                EventKind::TenantSchemaMigrated {
                    rollout_id,
                    from_version,
                    to_version,
                    duration_ms,
                }
            }
        ),
        (
            text(),
            text(),
            any::<u32>(),
            prop::option::of(error()),
            (any::<u64>(), any::<u64>(), any::<u64>())
        )
            .prop_map(|(rollout_id, state, target_version, reason, counts)| {
                EventKind::RolloutStateChanged {
                    rollout_id,
                    state,
                    target_version,
                    reason,
                    tenants: counts.0,
                    succeeded: counts.1,
                    failed: counts.2,
                }
            }),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (any::<u128>(), any::<u128>(), time(), kind()).prop_map(|(id, tenant, occurred_at, kind)| {
        // A UUIDv7's version and variant bits, so the tenant id is a valid one.
        let tenant = (tenant & !(0xF << 76) & !(0x3 << 62)) | (0x7 << 76) | (0x2 << 62);
        Event {
            id: EventId(Uuid::from_u128(id)),
            subject: Subject::Tenant(
                TenantId::from_uuid(Uuid::from_u128(tenant)).expect("a UUIDv7"),
            ),
            occurred_at,
            kind,
        }
    })
}

proptest! {
    #[test]
    fn any_event_survives_the_outbox_json(event in event()) {
        let stored = serde_json::to_vec(&event.kind).expect("an event serializes");
        let read: EventKind = serde_json::from_slice(&stored).expect("its JSON decodes");
        prop_assert_eq!(read, event.kind);
    }

    #[test]
    fn any_event_survives_the_wire_with_the_payload_its_type_names(event in event()) {
        let relayed = proto::TenantEvent::from(&event);
        let decoded = proto::TenantEvent::decode(relayed.encode_to_vec().as_slice())
            .expect("a relayed event decodes");
        prop_assert_eq!(&decoded, &relayed);
        prop_assert_eq!(decoded.event_id, event.id.0.to_string());
        let tenant = event.subject.tenant().expect("a tenant event").to_string();
        prop_assert_eq!(decoded.tenant_id, tenant);
        let payload = format!("{:?}", decoded.payload.expect("a payload"));
        let named = event.kind.type_name().trim_start_matches("tenant.v1.");
        prop_assert!(payload.starts_with(&format!("{named}(")), "{} is not {}", payload, named);
    }

    #[test]
    fn every_event_type_is_a_known_type(event in event()) {
        prop_assert!(EventKind::is_known_type(event.kind.type_name()));
    }
}
