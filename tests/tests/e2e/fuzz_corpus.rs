//! The fuzz targets' seed corpus (`fuzz/seeds/<target>/`) is current. `grpc_request` has
//! one seed per unary method of the API, named after it, whose first byte picks that
//! method (its index among `unary_methods()`), whose second picks the admin caller, and
//! whose rest is a plausible request of the method's type (hand-written for the methods
//! with the most validation, otherwise every string field filled by its name).
//! `api_key` has well-formed and nearly well-formed keys, `outbox_event` stored events of
//! each shape and a relayed one, `client_identity` certificates of each principal. A
//! method added to the API (or a change of these encodings) fails this test until the
//! seeds are written again:
//! `UPDATE_FUZZ_SEEDS=1 cargo test -p tenantd-e2e --test e2e fuzz_corpus`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FieldMask, FileDescriptorSet, Struct, Value, value::Kind};
use tenantd_domain::provisioning::{StepError, StepKind, StepState};
use tenantd_domain::{ApiKeyId, ApiKeySecret, Event, EventId, EventKind, Principal, Subject};
use tenantd_e2e::pb;
use tenantd_server::grpc::unary_methods;
use tenantd_server::identity::principal_of;
use uuid::Uuid;

const TENANT_ID: &str = "01936f5e-8f3a-7b2c-9d4e-5f6a7b8c9d0e";
const OTHER_ID: &str = "01936f5e-8f3a-7b2c-9d4e-000000000001";

fn seeds_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
}

fn updating() -> bool {
    std::env::var_os("UPDATE_FUZZ_SEEDS").is_some()
}

/// Writes `expected` into `target`'s seeds when updating; fails naming each seed that is
/// missing or differs.
fn assert_current(target: &str, expected: &BTreeMap<String, Vec<u8>>) {
    let dir = seeds_dir(target);
    if updating() {
        std::fs::create_dir_all(&dir).expect("the seeds directory");
        for (name, seed) in expected {
            std::fs::write(dir.join(name), seed).expect("a seed written");
        }
    }
    let mut stale = Vec::new();
    for (name, seed) in expected {
        match std::fs::read(dir.join(name)) {
            Ok(found) if found == *seed => {}
            Ok(_) => stale.push(format!("{name} (outdated)")),
            Err(_) => stale.push(format!("{name} (missing)")),
        }
    }
    assert!(
        stale.is_empty(),
        "fuzz/seeds/{target} is not current: {stale:?}; regenerate with \
         UPDATE_FUZZ_SEEDS=1 cargo test -p tenantd-e2e --test e2e fuzz_corpus"
    );
}

fn tenant() -> pb::Tenant {
    pb::Tenant {
        tenant_id: TENANT_ID.to_owned(),
        slug: "acme-corp".to_owned(),
        display_name: "Acme Corp".to_owned(),
        plan_id: "pro".to_owned(),
        contact_email: "ops@acme.example".to_owned(),
        labels: BTreeMap::from([("region".to_owned(), "eu".to_owned())])
            .into_iter()
            .collect(),
        config: Some(Struct {
            fields: BTreeMap::from([
                (
                    "seats".to_owned(),
                    Value {
                        kind: Some(Kind::NumberValue(25.0)),
                    },
                ),
                (
                    "sso".to_owned(),
                    Value {
                        kind: Some(Kind::BoolValue(true)),
                    },
                ),
            ]),
        }),
        etag: "\"1\"".to_owned(),
        ..pb::Tenant::default()
    }
}

/// The hand-written requests, by method name.
fn written(method: &str) -> Option<Vec<u8>> {
    Some(match method {
        "CreateTenant" => pb::CreateTenantRequest {
            tenant: Some(tenant()),
            request_id: OTHER_ID.to_owned(),
        }
        .encode_to_vec(),
        "UpdateTenant" => pb::UpdateTenantRequest {
            tenant: Some(tenant()),
            update_mask: Some(FieldMask {
                paths: vec!["display_name".into(), "labels".into(), "config".into()],
            }),
        }
        .encode_to_vec(),
        "ListTenants" => pb::ListTenantsRequest {
            page_size: 10,
            plan_id: "pro".to_owned(),
            slug_prefix: "acme".to_owned(),
            labels: [("region".to_owned(), "eu".to_owned())]
                .into_iter()
                .collect(),
            ..pb::ListTenantsRequest::default()
        }
        .encode_to_vec(),
        "CreateApiKey" => pb::CreateApiKeyRequest {
            tenant_id: TENANT_ID.to_owned(),
            display_name: "ci".to_owned(),
            scopes: vec!["tenants.read".to_owned()],
            expire_time: None,
        }
        .encode_to_vec(),
        "VerifyApiKey" => pb::VerifyApiKeyRequest {
            api_key: key(7).expose(),
        }
        .encode_to_vec(),
        _ => return None,
    })
}

/// A request of `message` with each string field filled by its name (ids with UUIDv7s,
/// an etag) and each int32 set to 10.
fn filled(message: &DescriptorProto) -> Vec<u8> {
    let mut buf = Vec::new();
    for field in &message.field {
        let tag = u32::try_from(field.number()).expect("a field number");
        match field.r#type() {
            Type::String => {
                let value = match field.name() {
                    "tenant_id" => TENANT_ID,
                    name if name.ends_with("_id") => OTHER_ID,
                    "etag" => "\"1\"",
                    _ => "seed",
                };
                prost::encoding::string::encode(tag, &value.to_owned(), &mut buf);
            }
            Type::Int32 => prost::encoding::int32::encode(tag, &10, &mut buf),
            _ => {}
        }
    }
    buf
}

/// Each seed's file name and content.
fn seeds() -> BTreeMap<String, Vec<u8>> {
    let files = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptors");
    let messages: BTreeMap<String, &DescriptorProto> = files
        .file
        .iter()
        .flat_map(|f| {
            f.message_type
                .iter()
                .map(move |m| (format!(".{}.{}", f.package(), m.name()), m))
        })
        .collect();
    let inputs: BTreeMap<String, String> = files
        .file
        .iter()
        .flat_map(|f| &f.service)
        .flat_map(|s| {
            s.method.iter().map(move |m| {
                (
                    format!("/tenant.v1.{}/{}", s.name(), m.name()),
                    m.input_type().to_owned(),
                )
            })
        })
        .collect();
    let methods = unary_methods();
    assert!(
        methods.len() <= 256,
        "one byte no longer picks every method"
    );
    methods
        .iter()
        .enumerate()
        .map(|(index, path)| {
            let (service, method) = path
                .trim_start_matches("/tenant.v1.")
                .split_once('/')
                .expect("a method path");
            let message = written(method).unwrap_or_else(|| filled(messages[&inputs[path]]));
            let mut seed = vec![u8::try_from(index).expect("checked above"), 0];
            seed.extend(message);
            (format!("{service}.{method}"), seed)
        })
        .collect()
}

#[test]
fn the_grpc_request_seeds_are_one_current_request_per_unary_method() {
    assert_current("grpc_request", &seeds());
}

fn key(secret: u8) -> ApiKeySecret {
    ApiKeySecret::new(
        ApiKeyId::parse(&OTHER_ID.replace('-', "")).expect("an id"),
        &[secret; 20],
    )
}

#[test]
fn the_api_key_seeds_are_current() {
    let valid = key(7).expose();
    let mut bad_checksum = valid.clone();
    bad_checksum.replace_range(valid.len() - 1.., "0");
    let expected = BTreeMap::from([
        ("valid".to_owned(), valid.clone().into_bytes()),
        ("uppercase".to_owned(), valid.to_uppercase().into_bytes()),
        ("bad-checksum".to_owned(), bad_checksum.into_bytes()),
        ("id-only".to_owned(), OTHER_ID.as_bytes().to_vec()),
    ]);
    assert_current("api_key", &expected);
    assert!(ApiKeySecret::parse(&valid).is_some());
}

fn stored_events() -> Vec<EventKind> {
    let error = StepError {
        reason: "DNS_NAME_TAKEN".to_owned(),
        message: "acme.example.test is held by another owner".to_owned(),
        permanent: true,
    };
    vec![
        EventKind::TenantCreated {
            slug: "acme-corp".to_owned(),
            display_name: "Acme Corp".to_owned(),
            plan_id: "pro".to_owned(),
            labels: BTreeMap::from([("region".to_owned(), "eu".to_owned())]),
        },
        EventKind::TenantUpdated {
            changed_fields: vec!["display_name".to_owned(), "labels".to_owned()],
            plan_id: "pro".to_owned(),
            display_name: "Acme".to_owned(),
            labels: BTreeMap::new(),
        },
        EventKind::TenantDeleted {
            purge_at: DateTime::<Utc>::UNIX_EPOCH,
        },
        EventKind::TenantLegalHoldReleased {
            reason: "case closed".to_owned(),
            purge_at: Some(DateTime::<Utc>::UNIX_EPOCH),
        },
        EventKind::ProvisioningStepChanged {
            run_id: OTHER_ID.to_owned(),
            step: StepKind::Dns,
            state: StepState::Failed,
            attempt: 3,
            error: Some(error.clone()),
        },
        EventKind::ProvisioningFailed {
            run_id: OTHER_ID.to_owned(),
            failed_step: StepKind::Dns,
            error: error.clone(),
        },
        EventKind::TenantSchemaMigrated {
            rollout_id: OTHER_ID.to_owned(),
            from_version: 3,
            to_version: 4,
            duration_ms: 120,
        },
        EventKind::RolloutStateChanged {
            rollout_id: OTHER_ID.to_owned(),
            state: "PAUSED".to_owned(),
            target_version: 4,
            reason: Some(error),
            tenants: 10,
            succeeded: 7,
            failed: 3,
        },
    ]
}

#[test]
fn the_outbox_event_seeds_are_current() {
    let mut expected: BTreeMap<String, Vec<u8>> = stored_events()
        .into_iter()
        .map(|kind| {
            let json = serde_json::to_vec(&kind).expect("an event serializes");
            (format!("stored.{}", kind.type_name()), json)
        })
        .collect();
    let relayed = pb::TenantEvent::from(&Event {
        id: EventId(Uuid::parse_str(OTHER_ID).expect("a UUID")),
        subject: Subject::Tenant(TENANT_ID.parse().expect("a tenant id")),
        occurred_at: DateTime::<Utc>::UNIX_EPOCH,
        kind: stored_events().remove(0),
    });
    expected.insert("relayed.tenant_created".to_owned(), relayed.encode_to_vec());
    assert_current("outbox_event", &expected);
}

/// A self-signed certificate whose URI SANs are `uris` (DER).
fn certificate(uris: &[&str]) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = uris
        .iter()
        .map(|uri| rcgen::SanType::URI((*uri).try_into().expect("an IA5 string")))
        .collect();
    let key = rcgen::KeyPair::generate().expect("a key");
    params
        .self_signed(&key)
        .expect("a certificate")
        .der()
        .to_vec()
}

/// Certificates are not reproducible (fresh keys), so these seeds are written once and
/// then checked for the principal each must make.
#[test]
fn the_client_identity_seeds_make_the_principals_they_are_named_after() {
    let domain = "tenantd.test";
    let cases: [(&str, &[&str], Option<Principal>); 4] = [
        (
            "admin",
            &["spiffe://tenantd.test/admin"],
            Some(Principal::Admin),
        ),
        (
            "service",
            &["spiffe://tenantd.test/service/billing"],
            Some(Principal::Service("billing".to_owned())),
        ),
        (
            "tenant",
            &["spiffe://tenantd.test/tenant/01936f5e-8f3a-7b2c-9d4e-5f6a7b8c9d0e"],
            Some(Principal::Tenant(TENANT_ID.parse().expect("a tenant id"))),
        ),
        (
            "ambiguous",
            &[
                "spiffe://tenantd.test/admin",
                "spiffe://tenantd.test/service/billing",
            ],
            None,
        ),
    ];
    let dir = seeds_dir("client_identity");
    for (name, uris, principal) in cases {
        let path = dir.join(name);
        if updating() || !path.exists() {
            std::fs::create_dir_all(&dir).expect("the seeds directory");
            std::fs::write(&path, certificate(uris)).expect("a seed written");
        }
        let der = std::fs::read(&path).expect("a seed");
        assert_eq!(principal_of(&der, domain), principal, "{name}");
    }
}
