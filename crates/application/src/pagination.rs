//! Cursor pagination: page sizes and opaque page tokens.
//!
//! A token is base64url JSON holding the last key returned and a checksum binding that key
//! to the filters it was issued for, so a token replayed with other filters, or edited by
//! hand, is refused with INVALID_ARGUMENT instead of silently returning the wrong page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tenantd_domain::{Error, Reason};

/// Page size when the caller sends 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page; bigger requests are coerced down (AIP-158).
pub const MAX_PAGE_SIZE: usize = 500;

/// A validated page request: how many items, and after which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Items to return.
    pub size: usize,
    /// Last key of the previous page, if any.
    pub after: Option<String>,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Token for the next page; empty on the last one.
    pub next_page_token: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Token {
    /// Checksum of the filters and the key.
    f: String,
    /// Last key returned.
    k: String,
}

impl PageRequest {
    /// Validates `page_size` and decodes `page_token` issued for `filters` (any stable
    /// text describing the query: resource kind plus every filter value).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on `page_size` when negative, on `page_token` when it is
    /// malformed or was issued for other filters.
    pub fn parse(page_size: i32, page_token: &str, filters: &str) -> Result<Self, Error> {
        let size = match usize::try_from(page_size) {
            Err(_) => return Err(Error::invalid("page_size", "must not be negative")),
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
        };
        if page_token.is_empty() {
            return Ok(Self { size, after: None });
        }
        let invalid = || {
            Error::invalid_because(
                Reason::PageTokenInvalid,
                "page_token",
                "is malformed or was issued for a different query; start again without it",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(page_token).map_err(|_| invalid())?;
        let token: Token = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if token.k.is_empty() || token.f != checksum(filters, &token.k) {
            return Err(invalid());
        }
        Ok(Self {
            size,
            after: Some(token.k),
        })
    }

    /// How many items to fetch: one more than the page, to learn whether another follows.
    pub fn fetch_limit(&self) -> usize {
        self.size + 1
    }

    /// Cuts `fetched` (fetched with [`Self::fetch_limit`]) to the page and issues the next
    /// token from the last item's key.
    pub fn finish<T>(
        &self,
        mut fetched: Vec<T>,
        filters: &str,
        key: impl Fn(&T) -> String,
    ) -> Page<T> {
        let next_page_token = if fetched.len() > self.size {
            fetched.truncate(self.size);
            fetched
                .last()
                .map(|last| encode(&key(last), filters))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Page {
            items: fetched,
            next_page_token,
        }
    }
}

fn encode(last_key: &str, filters: &str) -> String {
    let token = Token {
        f: checksum(filters, last_key),
        k: last_key.to_owned(),
    };
    let json = serde_json::to_vec(&token).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Binds a key to the filters it was issued for. Unkeyed on purpose: it catches replays with
/// other filters and hand-edited tokens, not forgery, and needs none (a forged token can
/// only move a caller within results it may list anyway).
fn checksum(filters: &str, key: &str) -> String {
    let mut hex = crate::digest::sha256_hex(format!("{filters}\0{key}").as_bytes());
    hex.truncate(16);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_clamps_and_refuses_negative() {
        assert_eq!(
            PageRequest::parse(0, "", "q").unwrap().size,
            DEFAULT_PAGE_SIZE
        );
        assert_eq!(PageRequest::parse(10, "", "q").unwrap().size, 10);
        assert_eq!(
            PageRequest::parse(10_000, "", "q").unwrap().size,
            MAX_PAGE_SIZE
        );
        assert!(
            matches!(PageRequest::parse(-1, "", "q"), Err(Error::InvalidArgument { violations: v, .. }) if v[0].field == "page_size")
        );
    }

    #[test]
    fn token_round_trips_for_the_same_filters_only() {
        let req = PageRequest::parse(2, "", "tenants;plan=pro").unwrap();
        let page = req.finish(vec![1, 2, 3], "tenants;plan=pro", ToString::to_string);
        assert_eq!(page.items, vec![1, 2]);
        let next = PageRequest::parse(2, &page.next_page_token, "tenants;plan=pro").unwrap();
        assert_eq!(next.after.as_deref(), Some("2"));
        assert!(PageRequest::parse(2, &page.next_page_token, "tenants;plan=free").is_err());
    }

    #[test]
    fn a_token_with_an_edited_key_is_refused() {
        let req = PageRequest::parse(1, "", "q").unwrap();
        let token = req
            .finish(vec!["a", "b"], "q", ToString::to_string)
            .next_page_token;
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(&token).unwrap()).unwrap();
        let edited = URL_SAFE_NO_PAD.encode(json.replace(r#""k":"a""#, r#""k":"z""#));
        assert_ne!(edited, token);
        assert!(PageRequest::parse(1, &edited, "q").is_err());
    }

    #[test]
    fn last_page_has_no_token() {
        let req = PageRequest::parse(5, "", "q").unwrap();
        assert_eq!(
            req.finish(vec![1, 2], "q", ToString::to_string)
                .next_page_token,
            ""
        );
    }

    #[test]
    fn tampered_tokens_are_invalid_argument() {
        for bad in [
            "%%%",
            "bm90IGpzb24",
            &URL_SAFE_NO_PAD.encode(br#"{"f":"00","k":"x"}"#),
        ] {
            let err = PageRequest::parse(5, bad, "q").unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { violations: v, .. } if v[0].field == "page_token"),
                "{bad}"
            );
        }
    }
}

#[cfg(test)]
mod properties {
    //! Page tokens over arbitrary keys, filters and tokens.

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_key_round_trips_for_its_filters_and_no_others(
            key in "\\PC{1,64}",
            filters in "\\PC{0,64}",
            other in "\\PC{0,64}",
            size in 1usize..20,
        ) {
            prop_assume!(filters != other);
            let request = PageRequest::parse(i32::try_from(size).expect("small"), "", &filters).expect("valid");
            let fetched = vec![key.clone(); size + 1];
            let page = request.finish(fetched, &filters, Clone::clone);
            prop_assert_eq!(page.items.len(), size);
            prop_assert!(!page.next_page_token.is_empty());
            let next = PageRequest::parse(1, &page.next_page_token, &filters).expect("its own token");
            prop_assert_eq!(next.after, Some(key));
            let refused = PageRequest::parse(1, &page.next_page_token, &other).expect_err("other filters");
            prop_assert_eq!(refused.reason(), Reason::PageTokenInvalid);
        }

        #[test]
        fn any_text_as_a_token_is_refused_with_its_reason_or_names_a_key(
            token in "\\PC{1,300}",
        ) {
            match PageRequest::parse(5, &token, "tenants") {
                Ok(request) => prop_assert!(request.after.is_some_and(|k| !k.is_empty())),
                Err(err) => prop_assert_eq!(err.reason(), Reason::PageTokenInvalid),
            }
        }
    }
}
