//! The tenant's descriptive fields as validated value objects: display name, contact
//! email, labels and free-form configuration.

use std::collections::BTreeMap;
use std::fmt;

use crate::FieldViolation;

/// A human-readable name: 1 to 200 characters, no control characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    /// Longest accepted display name, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Validates and trims `text`.
    ///
    /// # Errors
    /// A [`FieldViolation`] on `display_name`.
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(FieldViolation::new("display_name", "is required"));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(FieldViolation::new(
                "display_name",
                "must be at most 200 characters long",
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldViolation::new(
                "display_name",
                "must not contain control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A contact email address. Personal data: its `Debug` never shows the address, and
/// validation errors never repeat it.
#[derive(Clone, PartialEq, Eq)]
pub struct ContactEmail(String);

impl ContactEmail {
    /// Longest accepted address (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;

    /// Validates `text` as an addr-spec of the common form `local@domain.tld`.
    ///
    /// # Errors
    /// A [`FieldViolation`] on `contact_email` that does not echo the input.
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let fail = |why: &str| Err(FieldViolation::new("contact_email", why));
        let text = text.trim();
        if text.is_empty() {
            return fail("is required");
        }
        if text.len() > Self::MAX_LEN {
            return fail("must be at most 254 characters long");
        }
        let Some((local, domain)) = text.rsplit_once('@') else {
            return fail("must be an email address like name@example.com");
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok {
            return fail("must be an email address like name@example.com");
        }
        Ok(Self(text.to_owned()))
    }

    /// The address as given (trimmed).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The form used for exact-match lookups: the whole address lowercased.
    pub fn normalized(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Debug for ContactEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContactEmail(<redacted>)")
    }
}

/// Free-form labels, Kubernetes-style: at most 64 pairs; keys 1 to 63 characters of
/// lowercase letters, digits, '-', '_' and '.', starting and ending with a letter or digit;
/// values 0 to 63 characters of the same alphabet.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// Most labels one tenant may carry.
    pub const MAX_PAIRS: usize = 64;

    /// Validates every pair.
    ///
    /// # Errors
    /// One [`FieldViolation`] per bad key or value, on `labels` (the key is named in the
    /// description, the value never is).
    pub fn parse(pairs: BTreeMap<String, String>) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        if pairs.len() > Self::MAX_PAIRS {
            violations.push(FieldViolation::new(
                "labels",
                "at most 64 labels are allowed",
            ));
        }
        for (key, value) in &pairs {
            if !valid_label_text(key, false) {
                violations.push(FieldViolation::new(
                    "labels",
                    format!(
                        "key {key:.63?} must be 1-63 lowercase letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
                    ),
                ));
            }
            if !valid_label_text(value, true) {
                violations.push(FieldViolation::new(
                    "labels",
                    format!(
                        "value of key {key:.63?} must be at most 63 lowercase letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
                    ),
                ));
            }
        }
        if violations.is_empty() {
            Ok(Self(pairs))
        } else {
            Err(violations)
        }
    }

    /// The pairs.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Whether every pair of `selector` is present with the same value.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.0.get(k) == Some(v))
    }
}

fn valid_label_text(text: &str, may_be_empty: bool) -> bool {
    if text.is_empty() {
        return may_be_empty;
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    text.len() <= 63
        && text.starts_with(alnum)
        && text.ends_with(alnum)
        && text
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// Free-form tenant configuration: a JSON object of at most 64 KiB once serialized.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct TenantConfig(serde_json::Map<String, serde_json::Value>);

impl TenantConfig {
    /// Largest accepted configuration, serialized as JSON.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// Validates the size of `object`.
    ///
    /// # Errors
    /// A [`FieldViolation`] on `config` when it is too large.
    pub fn parse(
        object: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, FieldViolation> {
        let size = serde_json::to_vec(&object).map_or(usize::MAX, |bytes| bytes.len());
        if size > Self::MAX_BYTES {
            return Err(FieldViolation::new(
                "config",
                "must be at most 64 KiB as JSON",
            ));
        }
        if object.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)) {
            return Err(FieldViolation::new(
                "config",
                "must not contain NUL characters",
            ));
        }
        Ok(Self(object))
    }

    /// The JSON object.
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}

fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_is_trimmed_and_bounded() {
        assert_eq!(
            DisplayName::parse("  Acme Corp ").unwrap().as_str(),
            "Acme Corp"
        );
        assert_eq!(
            DisplayName::parse("  ").unwrap_err().description,
            "is required"
        );
        assert!(DisplayName::parse(&"x".repeat(201)).is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
    }

    #[test]
    fn email_validation_never_echoes_the_address() {
        assert!(ContactEmail::parse("ops@acme.example").is_ok());
        assert!(ContactEmail::parse("first.last+tag@mail.acme.io").is_ok());
        for bad in [
            "",
            "nope",
            "a@b",
            "@acme.io",
            "a@@acme.io",
            "a b@acme.io",
            "a@-acme.io",
            "a..b@acme.io",
        ] {
            let err = ContactEmail::parse(bad).unwrap_err();
            assert_eq!(err.field, "contact_email", "{bad:?}");
            if !bad.is_empty() {
                assert!(!err.description.contains(bad), "{bad:?} echoed");
            }
        }
    }

    #[test]
    fn email_debug_is_redacted_and_normalized_is_lowercase() {
        let email = ContactEmail::parse("Ops@Acme.Example").unwrap();
        assert_eq!(format!("{email:?}"), "ContactEmail(<redacted>)");
        assert_eq!(email.normalized(), "ops@acme.example");
    }

    #[test]
    fn labels_follow_kubernetes_syntax() {
        let ok = BTreeMap::from([
            ("env".to_owned(), "prod".to_owned()),
            ("tier".to_owned(), String::new()),
        ]);
        let labels = Labels::parse(ok).unwrap();
        assert!(labels.matches(&BTreeMap::from([("env".to_owned(), "prod".to_owned())])));
        assert!(!labels.matches(&BTreeMap::from([("env".to_owned(), "dev".to_owned())])));

        let bad = BTreeMap::from([
            ("Env".to_owned(), "x".to_owned()),
            ("ok".to_owned(), "-bad".to_owned()),
        ]);
        let violations = Labels::parse(bad).unwrap_err();
        assert_eq!(violations.len(), 2);
        assert!(violations.iter().all(|v| v.field == "labels"));

        let too_many = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(Labels::parse(too_many).is_err());
    }

    #[test]
    fn config_is_size_limited() {
        let mut big = serde_json::Map::new();
        big.insert("blob".into(), serde_json::Value::String("x".repeat(70_000)));
        assert_eq!(TenantConfig::parse(big).unwrap_err().field, "config");
        let mut nul = serde_json::Map::new();
        nul.insert("k".into(), serde_json::json!({"deep": ["ok", "bad\u{0}"]}));
        assert_eq!(TenantConfig::parse(nul).unwrap_err().field, "config");
        assert!(TenantConfig::parse(serde_json::Map::new()).is_ok());
    }
}
