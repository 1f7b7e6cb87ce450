//! Slugs: the tenant's DNS label (`<slug>.<base domain>`), unique and immutable.

use std::fmt;

use crate::FieldViolation;

/// Words that would collide with platform hostnames or confuse users.
const RESERVED: &[&str] = &[
    "admin",
    "administrator",
    "api",
    "app",
    "apps",
    "assets",
    "auth",
    "billing",
    "blog",
    "cdn",
    "console",
    "dashboard",
    "dev",
    "docs",
    "ftp",
    "grpc",
    "help",
    "imap",
    "internal",
    "localhost",
    "login",
    "mail",
    "metrics",
    "mx",
    "ns1",
    "ns2",
    "oauth",
    "pop",
    "root",
    "signup",
    "smtp",
    "sso",
    "staging",
    "static",
    "status",
    "support",
    "system",
    "tenant",
    "tenantd",
    "tenants",
    "test",
    "webmail",
    "www",
];

/// Minimum slug length: shorter names are too easy to squat.
pub const MIN_LEN: usize = 3;
/// Maximum slug length: one DNS label.
pub const MAX_LEN: usize = 63;

/// A validated slug: lowercase DNS label of 3 to 63 characters, starting with a letter,
/// letters/digits/single hyphens inside, not ending with a hyphen, not reserved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    /// Validates `text` as a slug.
    ///
    /// # Errors
    /// A [`FieldViolation`] on field `slug` naming the broken rule.
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let fail = |why: &str| Err(FieldViolation::new("slug", why));
        if text.is_empty() {
            return fail("is required");
        }
        let len = text.chars().count();
        if !(MIN_LEN..=MAX_LEN).contains(&len) {
            return fail("must be 3 to 63 characters long");
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return fail("may contain only lowercase letters a-z, digits and '-'");
        }
        if !text.starts_with(|c: char| c.is_ascii_lowercase()) {
            return fail("must start with a letter");
        }
        if text.ends_with('-') {
            return fail("must not end with '-'");
        }
        if text.contains("--") {
            return fail("must not contain consecutive hyphens");
        }
        if RESERVED.contains(&text) {
            return fail("is a reserved word");
        }
        Ok(Self(text.to_owned()))
    }

    /// Restores a slug a store holds, without re-validating it: a slug accepted once stays
    /// readable even if the rules (say, the reserved words) grow later.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        let longest = "a".repeat(MAX_LEN);
        for ok in ["acme", "acme-corp", "a1b", longest.as_str()] {
            assert_eq!(Slug::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_every_broken_rule_with_a_reason() {
        let cases = [
            ("", "is required"),
            ("ab", "must be 3 to 63 characters long"),
            (&"a".repeat(64), "must be 3 to 63 characters long"),
            (
                "Acme",
                "may contain only lowercase letters a-z, digits and '-'",
            ),
            (
                "acme_corp",
                "may contain only lowercase letters a-z, digits and '-'",
            ),
            (
                "acmé",
                "may contain only lowercase letters a-z, digits and '-'",
            ),
            ("1acme", "must start with a letter"),
            ("-acme", "must start with a letter"),
            ("acme-", "must not end with '-'"),
            ("xn--acme", "must not contain consecutive hyphens"),
            ("admin", "is a reserved word"),
            ("www", "is a reserved word"),
        ];
        for (input, why) in cases {
            let err = Slug::parse(input).unwrap_err();
            assert_eq!(err.field, "slug");
            assert_eq!(err.description, why, "input {input:?}");
        }
    }
}
