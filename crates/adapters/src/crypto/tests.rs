//! Key ring properties: round trip, fresh nonces, tenant binding, rotation, blind index.

use uuid::Uuid;

use super::*;

fn ring(keys: &[&str]) -> KeyRing {
    KeyRing::parse(&keys.join(","), &STANDARD.encode([7u8; 32])).unwrap()
}

fn key(id: &str, byte: u8) -> String {
    format!("{id}:{}", STANDARD.encode([byte; 32]))
}

fn tenant() -> TenantId {
    TenantId::from_uuid(Uuid::now_v7()).unwrap()
}

fn email() -> ContactEmail {
    ContactEmail::parse("Ops@Acme.example").unwrap()
}

#[test]
fn a_sealed_email_opens_for_its_tenant_and_hides_the_plaintext() {
    let ring = ring(&[&key("k1", 1)]);
    let t = tenant();
    let sealed = ring.seal(t, &email());
    assert_eq!(sealed.key_id, "k1");
    assert_eq!(sealed.envelope[0], VERSION);
    assert!(
        !sealed.envelope.windows(4).any(|w| w == b"Acme"),
        "plaintext in envelope"
    );
    assert_eq!(ring.open(t, &sealed.envelope).unwrap(), email());
}

#[test]
fn every_seal_uses_a_fresh_nonce() {
    let ring = ring(&[&key("k1", 1)]);
    let t = tenant();
    let (a, b) = (ring.seal(t, &email()), ring.seal(t, &email()));
    assert_ne!(a.envelope, b.envelope);
}

#[test]
fn an_envelope_copied_to_another_tenant_does_not_open() {
    let ring = ring(&[&key("k1", 1)]);
    let sealed = ring.seal(tenant(), &email());
    assert_eq!(
        ring.open(tenant(), &sealed.envelope),
        Err(CipherError::Authentication)
    );
}

#[test]
fn tampering_and_garbage_are_refused() {
    let ring = ring(&[&key("k1", 1)]);
    let t = tenant();
    let mut sealed = ring.seal(t, &email()).envelope;
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    assert_eq!(ring.open(t, &sealed), Err(CipherError::Authentication));
    assert_eq!(ring.open(t, &[]), Err(CipherError::Malformed));
    assert_eq!(ring.open(t, &[9, 0]), Err(CipherError::Malformed));
}

#[test]
fn rotation_seals_with_the_first_key_and_opens_with_all() {
    let t = tenant();
    let old = ring(&[&key("k1", 1)]).seal(t, &email());
    let rotated = ring(&[&key("k2", 2), &key("k1", 1)]);
    assert_eq!(rotated.open(t, &old.envelope).unwrap(), email());
    assert_eq!(rotated.seal(t, &email()).key_id, "k2");
    let retired = ring(&[&key("k2", 2)]);
    assert_eq!(
        retired.open(t, &old.envelope),
        Err(CipherError::UnknownKey("k1".into()))
    );
}

#[test]
fn the_blind_index_is_keyed_and_case_insensitive() {
    let a = ring(&[&key("k1", 1)]);
    let other = KeyRing::parse(&key("k1", 1), &STANDARD.encode([8u8; 32])).unwrap();
    let lower = ContactEmail::parse("ops@acme.example").unwrap();
    assert_eq!(a.blind_index(&email()), a.blind_index(&lower));
    assert_ne!(a.blind_index(&email()), other.blind_index(&email()));
}

#[test]
fn bad_configurations_are_refused_without_echoing_key_material() {
    let blind = STANDARD.encode([7u8; 32]);
    assert_eq!(KeyRing::parse("", &blind).unwrap_err(), KeyRingError::Empty);
    assert_eq!(
        KeyRing::parse("nocolon", &blind).unwrap_err(),
        KeyRingError::Malformed(1)
    );
    let short = format!("k1:{}", STANDARD.encode([1u8; 16]));
    let err = KeyRing::parse(&short, &blind).unwrap_err();
    assert_eq!(err, KeyRingError::BadKey("k1".into()));
    assert!(!err.to_string().contains(&STANDARD.encode([1u8; 16])));
    let dup = format!("{},{}", key("k1", 1), key("k1", 2));
    assert_eq!(
        KeyRing::parse(&dup, &blind).unwrap_err(),
        KeyRingError::BadId(2)
    );
    assert_eq!(
        KeyRing::parse(&key("k1", 1), "c2hvcnQ=").unwrap_err(),
        KeyRingError::BadBlindIndexKey
    );
    let debug = format!("{:?}", ring(&[&key("k1", 1)]));
    assert!(debug.contains("k1") && !debug.contains(&STANDARD.encode([1u8; 32])));
}
