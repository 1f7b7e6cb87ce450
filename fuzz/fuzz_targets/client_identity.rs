//! The caller's identity from a client certificate (DER): anything either makes no
//! principal or one principal whose SPIFFE id names it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenantd_domain::Principal;
use tenantd_server::identity::principal_of;

const TRUST_DOMAIN: &str = "tenantd.test";

fuzz_target!(|der: &[u8]| {
    if let Some(principal) = principal_of(der, TRUST_DOMAIN) {
        let id = format!("spiffe://{TRUST_DOMAIN}/{}", principal.path());
        assert_eq!(
            Principal::from_spiffe_id(&id, TRUST_DOMAIN),
            Some(principal)
        );
        assert!(
            principal_of(der, "other.test").is_none(),
            "a principal of two domains"
        );
    }
});
