//! Page tokens: any `page_size`, `page_token` and filters either parse or are refused
//! with `page_size`/`PAGE_TOKEN_INVALID`; a token tenantd issued parses back to its key,
//! for its own filters only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenantd_application::pagination::{MAX_PAGE_SIZE, PageRequest};
use tenantd_domain::{Error, Reason};

/// The token a page of size one issues after `key`.
fn token_after(key: &str, filters: &str) -> String {
    let page = PageRequest::parse(1, "", filters).expect("a first page");
    let fetched = vec![key.to_owned(), format!("{key}~")];
    page.finish(fetched, filters, Clone::clone).next_page_token
}

fuzz_target!(|input: (i32, &str, &str, &str)| {
    let (size, token, filters, key) = input;
    match PageRequest::parse(size, token, filters) {
        Ok(page) => {
            assert!((1..=MAX_PAGE_SIZE).contains(&page.size), "{page:?}");
            if let Some(after) = &page.after {
                assert!(!after.is_empty());
                assert_eq!(token_after(after, filters), token, "tokens are canonical");
            }
        }
        Err(Error::InvalidArgument { reason, violations }) => {
            let field = &violations.first().expect("a violation").field;
            match reason {
                Reason::PageTokenInvalid => assert_eq!(field, "page_token"),
                Reason::FieldInvalid => assert_eq!(field, "page_size"),
                other => panic!("unexpected reason {other}"),
            }
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
    if !key.is_empty() {
        let issued = token_after(key, filters);
        let parsed = PageRequest::parse(size.max(0), &issued, filters).expect("an issued token");
        assert_eq!(parsed.after.as_deref(), Some(key));
        let other = format!("{filters}+");
        assert!(
            PageRequest::parse(0, &issued, &other).is_err(),
            "token reused for other filters"
        );
    }
});
