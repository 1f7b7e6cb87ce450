//! Tenant fields as a request carries them: slug, display name, contact email, labels
//! and `config` (a `google.protobuf.Struct`). Each either validates or is refused with a
//! violation naming its field; what validates validates again unchanged (the stored form
//! is a fixed point), and a config survives JSON and back.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tenantd_domain::{ContactEmail, DisplayName, FieldViolation, Labels, Slug, TenantConfig};
use tenantd_server::grpc::convert::{json_to_struct, struct_to_json};

#[derive(Debug, Arbitrary)]
struct Fields {
    slug: String,
    display_name: String,
    contact_email: String,
    labels: BTreeMap<String, String>,
    config: Vec<u8>,
}

fn refused_on(violation: &FieldViolation, field: &str) {
    assert!(
        violation.field.starts_with(field),
        "{violation:?} is not on {field}"
    );
    assert!(
        !violation.description.is_empty(),
        "{violation:?} says nothing"
    );
}

fuzz_target!(|fields: Fields| {
    match Slug::parse(&fields.slug) {
        Ok(slug) => assert_eq!(Slug::parse(slug.as_str()).ok(), Some(slug)),
        Err(violation) => refused_on(&violation, "slug"),
    }
    match DisplayName::parse(&fields.display_name) {
        Ok(name) => assert_eq!(DisplayName::parse(name.as_str()).ok(), Some(name)),
        Err(violation) => refused_on(&violation, "display_name"),
    }
    match ContactEmail::parse(&fields.contact_email) {
        Ok(email) => {
            let normalized = ContactEmail::parse(&email.normalized()).expect("normalized");
            assert_eq!(normalized.normalized(), email.normalized());
        }
        Err(violation) => refused_on(&violation, "contact_email"),
    }
    match Labels::parse(fields.labels) {
        Ok(labels) => {
            let again = Labels::parse(labels.as_map().clone()).expect("valid labels");
            assert_eq!(again, labels);
        }
        Err(violations) => {
            assert!(!violations.is_empty());
            violations.iter().for_each(|v| refused_on(v, "labels"));
        }
    }
    let Ok(config) = prost_types::Struct::decode(fields.config.as_slice()) else {
        return;
    };
    match struct_to_json(config, "tenant.config") {
        Ok(object) => {
            let back = struct_to_json(json_to_struct(&object), "tenant.config")
                .expect("a converted config converts again");
            assert_eq!(back, object, "JSON -> Struct -> JSON changed the config");
            match TenantConfig::parse(object) {
                Ok(config) => {
                    let size = serde_json::to_vec(config.as_map()).expect("JSON").len();
                    assert!(size <= TenantConfig::MAX_BYTES);
                }
                Err(violation) => refused_on(&violation, "config"),
            }
        }
        Err(tenantd_domain::Error::InvalidArgument { violations, .. }) => {
            refused_on(violations.first().expect("a violation"), "tenant.config");
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
});
