//! API keys as presented: a key either parses or is refused, and one that parses is
//! already in its one canonical form (so two spellings never name one key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenantd_domain::{ApiKeyId, ApiKeySecret};

fuzz_target!(|text: &str| {
    if let Some(key) = ApiKeySecret::parse(text) {
        assert_eq!(key.expose(), text, "a parsed key is canonical");
        assert_eq!(key.id().to_string().len(), 32);
        assert!(
            !format!("{key:?}").contains(key.secret()),
            "Debug shows the secret"
        );
    }
    if let Some(id) = ApiKeyId::parse(text) {
        assert_eq!(ApiKeyId::parse(&id.to_string()), Some(id));
    }
});
