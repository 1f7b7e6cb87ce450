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

const PURPOSE: &str = "tenants.contact_email";

#[test]
fn a_data_key_seals_for_its_tenant_and_names_no_ring_key() {
    let ring = ring(&[&key("k1", 1)]);
    let t = tenant();
    let dek = ring.new_data_key(t);
    assert_eq!(dek.key_id, "k1");
    assert!(!format!("{dek:?}").contains(&format!("{:?}", dek.envelope)));
    let sealed = ring
        .seal_with(t, &dek, PURPOSE, b"ops@acme.example")
        .unwrap();
    assert_eq!(sealed[0], DATA_KEY_VERSION);
    assert!(
        !sealed.windows(4).any(|w| w == b"acme"),
        "plaintext in envelope"
    );
    assert!(
        !sealed.windows(2).any(|w| w == b"k1"),
        "ring key id in envelope"
    );
    assert_eq!(
        ring.open_with(t, &dek, PURPOSE, &sealed).unwrap(),
        b"ops@acme.example"
    );
    // Not a version-1 envelope: the ring alone cannot open it.
    assert_eq!(
        ring.open_secret(t, PURPOSE, &sealed),
        Err(CipherError::Malformed)
    );
}

#[test]
fn data_keys_differ_per_tenant_and_per_call() {
    let ring = ring(&[&key("k1", 1)]);
    let t = tenant();
    let (a, b) = (ring.new_data_key(t), ring.new_data_key(t));
    let sealed = ring.seal_with(t, &a, PURPOSE, b"secret").unwrap();
    assert_eq!(
        ring.open_with(t, &b, PURPOSE, &sealed),
        Err(CipherError::Authentication),
        "another data key of the same tenant opened it"
    );
}

#[test]
fn a_data_key_sealed_value_copied_to_another_tenant_does_not_open() {
    let ring = ring(&[&key("k1", 1)]);
    let (owner, other) = (tenant(), tenant());
    let dek = ring.new_data_key(owner);
    let sealed = ring.seal_with(owner, &dek, PURPOSE, b"secret").unwrap();
    // With the owner's data key but the other tenant's id: the associated data differs,
    // and the wrapped key itself is bound to its tenant.
    assert_eq!(
        ring.open_with(other, &dek, PURPOSE, &sealed),
        Err(CipherError::Authentication)
    );
    // With the other tenant's own data key.
    let theirs = ring.new_data_key(other);
    assert_eq!(
        ring.open_with(other, &theirs, PURPOSE, &sealed),
        Err(CipherError::Authentication)
    );
    // Another purpose of the same tenant.
    assert_eq!(
        ring.open_with(owner, &dek, "initial_api_key", &sealed),
        Err(CipherError::Authentication)
    );
}

#[test]
fn without_its_data_key_a_sealed_value_opens_with_no_key_of_the_ring() {
    let ring = ring(&[&key("k1", 1), &key("k0", 2)]);
    let t = tenant();
    let dek = ring.new_data_key(t);
    let sealed = ring
        .seal_with(t, &dek, PURPOSE, b"ops@acme.example")
        .unwrap();
    drop(dek);
    for attempt in [ring.new_data_key(t), ring.new_data_key(tenant())] {
        assert_eq!(
            ring.open_with(t, &attempt, PURPOSE, &sealed),
            Err(CipherError::Authentication)
        );
    }
    assert!(ring.open(t, &sealed).is_err());
    assert!(ring.open_secret(t, PURPOSE, &sealed).is_err());
}

#[test]
fn rotation_rewraps_the_data_key_and_what_it_sealed_still_opens() {
    let old = ring(&[&key("k1", 1)]);
    let t = tenant();
    let dek = old.new_data_key(t);
    let sealed = old.seal_with(t, &dek, PURPOSE, b"secret").unwrap();
    let rotated = ring(&[&key("k2", 3), &key("k1", 1)]);
    let rewrapped = rotated.rewrap_data_key(t, &dek).unwrap();
    assert_eq!(rewrapped.key_id, "k2");
    assert_ne!(rewrapped.envelope, dek.envelope);
    let retired = ring(&[&key("k2", 3)]);
    assert_eq!(
        retired.open_with(t, &rewrapped, PURPOSE, &sealed).unwrap(),
        b"secret"
    );
    assert_eq!(
        retired.open_with(t, &dek, PURPOSE, &sealed),
        Err(CipherError::UnknownKey("k1".into())),
        "the retired ring key's wrapping still unwrapped"
    );
    assert_eq!(
        retired.rewrap_data_key(tenant(), &rewrapped),
        Err(CipherError::Authentication),
        "a data key rewrapped for another tenant"
    );
}

#[test]
fn malformed_data_key_envelopes_are_refused() {
    let ring = ring(&[&key("k1", 1)]);
    let t = tenant();
    let dek = ring.new_data_key(t);
    let mut sealed = ring.seal_with(t, &dek, PURPOSE, b"secret").unwrap();
    for bad in [
        &[][..],
        &[DATA_KEY_VERSION][..],
        &sealed[..5],
        &[1, 0, 0][..],
    ] {
        assert_eq!(
            ring.open_with(t, &dek, PURPOSE, bad),
            Err(CipherError::Malformed),
            "{bad:?}"
        );
    }
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    assert_eq!(
        ring.open_with(t, &dek, PURPOSE, &sealed),
        Err(CipherError::Authentication)
    );
    let garbage = WrappedDataKey {
        envelope: vec![9; 40],
        key_id: "k1".into(),
    };
    assert_eq!(
        ring.seal_with(t, &garbage, PURPOSE, b"x"),
        Err(CipherError::Malformed)
    );
}

#[test]
fn an_email_sealed_with_the_data_key_opens_only_with_that_key() {
    let ring = ring(&[&key("k1", 1)]);
    let t = tenant();
    let dek = ring.new_data_key(t);
    let sealed = ring.seal_with_key(t, &dek, &email()).unwrap();
    assert_eq!(sealed.key_id, SealedEmail::DATA_KEY);
    assert_eq!(sealed.envelope[0], DATA_KEY_VERSION);
    assert_eq!(
        ring.open_with_key(t, Some(&dek), &sealed.envelope).unwrap(),
        email()
    );
    assert_eq!(
        ring.open_with_key(t, None, &sealed.envelope),
        Err(CipherError::NoDataKey),
        "shredded: the key is gone"
    );
    assert_eq!(
        ring.open_with_key(t, Some(&ring.new_data_key(t)), &sealed.envelope),
        Err(CipherError::Authentication),
        "another key of the same tenant"
    );
    let other = tenant();
    assert_eq!(
        ring.open_with_key(other, Some(&ring.new_data_key(other)), &sealed.envelope),
        Err(CipherError::Authentication),
        "copied to another tenant's row with its key"
    );
    assert!(
        ring.open(t, &sealed.envelope).is_err(),
        "the ring alone does not open it"
    );
}

#[test]
fn an_email_sealed_by_the_ring_still_opens_where_a_data_key_is_expected() {
    let ring = ring(&[&key("k1", 1)]);
    let t = tenant();
    let legacy = ring.seal(t, &email());
    let dek = ring.new_data_key(t);
    for key in [None, Some(&dek)] {
        assert_eq!(
            ring.open_with_key(t, key, &legacy.envelope).unwrap(),
            email()
        );
    }
    assert_eq!(
        ring.open_with_key(tenant(), Some(&dek), &legacy.envelope),
        Err(CipherError::Authentication)
    );
}

#[test]
fn a_secret_opens_from_either_envelope_and_not_without_its_data_key() {
    let ring = ring(&[&key("k1", 1)]);
    let t = tenant();
    let dek = ring.new_data_key(t);
    let legacy = ring.seal_secret(t, PURPOSE, b"tk_secret");
    let sealed = ring.seal_with(t, &dek, PURPOSE, b"tk_secret").unwrap();
    for envelope in [&legacy, &sealed] {
        assert_eq!(
            ring.open_secret_with_key(t, Some(&dek), PURPOSE, envelope)
                .unwrap(),
            b"tk_secret"
        );
    }
    assert_eq!(
        ring.open_secret_with_key(t, None, PURPOSE, &legacy)
            .unwrap(),
        b"tk_secret",
        "the ring opens its own"
    );
    assert_eq!(
        ring.open_secret_with_key(t, None, PURPOSE, &sealed),
        Err(CipherError::NoDataKey)
    );
    assert_eq!(
        ring.open_secret_with_key(t, Some(&dek), "other.purpose", &sealed),
        Err(CipherError::Authentication),
        "another purpose"
    );
}

mod properties {
    //! Round trips over arbitrary input: any secret sealed for a tenant opens for it, with
    //! the ring and with the tenant's data key, and for no other tenant, purpose or edited
    //! envelope.

    use proptest::prelude::*;

    use super::*;

    const PURPOSE: &str = "property-test";

    fn tenant_from(bits: u128) -> TenantId {
        // A valid UUIDv7: version 7, RFC 4122 variant, the rest from `bits`.
        let bits = (bits & !(0xF << 76) & !(0b11 << 62)) | (0x7 << 76) | (0b10 << 62);
        TenantId::from_uuid(Uuid::from_u128(bits)).expect("a v7 id")
    }

    proptest! {
        #[test]
        fn any_secret_round_trips_for_its_tenant_only(
            secret in proptest::collection::vec(any::<u8>(), 0..512),
            a in any::<u128>(),
            b in any::<u128>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let ring = ring(&[&key("k1", 1)]);
            let (mine, other) = (tenant_from(a), tenant_from(b));
            prop_assume!(mine != other);

            let sealed = ring.seal_secret(mine, PURPOSE, &secret);
            prop_assert_eq!(ring.open_secret(mine, PURPOSE, &sealed).expect("opens"), secret.clone());
            prop_assert!(ring.open_secret(other, PURPOSE, &sealed).is_err());
            prop_assert!(ring.open_secret(mine, "another-purpose", &sealed).is_err());
            let mut edited = sealed.clone();
            let at = flip.index(edited.len());
            edited[at] ^= 0x01;
            prop_assert!(ring.open_secret(mine, PURPOSE, &edited).is_err());

            let data_key = ring.new_data_key(mine);
            let with_key = ring.seal_with(mine, &data_key, PURPOSE, &secret).expect("seals");
            prop_assert_eq!(
                ring.open_secret_with_key(mine, Some(&data_key), PURPOSE, &with_key).expect("opens"),
                secret
            );
            prop_assert!(ring.open_with(other, &data_key, PURPOSE, &with_key).is_err());
            prop_assert!(
                ring.open_secret_with_key(mine, Some(&ring.new_data_key(mine)), PURPOSE, &with_key).is_err(),
                "another data key of the same tenant does not open it"
            );
        }

        #[test]
        fn arbitrary_bytes_never_open_and_never_panic(
            envelope in proptest::collection::vec(any::<u8>(), 0..256),
            a in any::<u128>(),
        ) {
            let ring = ring(&[&key("k1", 1)]);
            let t = tenant_from(a);
            prop_assert!(ring.open_secret(t, PURPOSE, &envelope).is_err());
            prop_assert!(EmailCipher::open(&ring, t, &envelope).is_err());
            let data_key = ring.new_data_key(t);
            prop_assert!(ring.open_with(t, &data_key, PURPOSE, &envelope).is_err());
        }
    }
}
