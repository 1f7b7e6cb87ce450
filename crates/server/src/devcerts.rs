//! Development certificates for the embedded mode (rcgen): a CA, a server certificate for
//! localhost/127.0.0.1 and an admin client certificate carrying the SPIFFE id
//! `spiffe://<trust domain>/admin`. The CA key is kept beside them so more client
//! certificates can be minted. Never meant for production.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// File names inside the directory.
pub const FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "admin.pem",
    "admin.key",
];

/// Paths of a development certificate set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCerts {
    /// The directory.
    pub dir: PathBuf,
}

impl DevCerts {
    /// CA certificate (clients trust it; the server verifies client certs with it).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// CA private key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// Server certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    /// Server private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// Admin client certificate.
    pub fn admin_cert(&self) -> PathBuf {
        self.dir.join("admin.pem")
    }
    /// Admin client key.
    pub fn admin_key(&self) -> PathBuf {
        self.dir.join("admin.key")
    }
}

/// Reuses the set in `dir` when complete, else generates a new one (also when `force`).
/// Returns the set and whether it was generated.
///
/// # Errors
/// When the directory or files cannot be written, or generation fails.
pub fn ensure(dir: &Path, trust_domain: &str, force: bool) -> anyhow::Result<(DevCerts, bool)> {
    let certs = DevCerts {
        dir: dir.to_path_buf(),
    };
    if !force && FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok((certs, false));
    }
    generate(dir, trust_domain)?;
    Ok((certs, true))
}

fn generate(dir: &Path, trust_domain: &str) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tenantd development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write(dir, "ca.pem", &ca_cert.pem(), false)?;
    write(dir, "ca.key", &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca_params, ca_key);

    write_server_cert(dir, &issuer)?;

    let admin_key = KeyPair::generate()?;
    let admin_cert = client_params(&format!("spiffe://{trust_domain}/admin"), "admin")?
        .signed_by(&admin_key, &issuer)?;
    write(dir, "admin.pem", &admin_cert.pem(), false)?;
    write(dir, "admin.key", &admin_key.serialize_pem(), true)?;
    Ok(())
}

/// Issues a client certificate for `spiffe_id`, signed by the development CA in `dir`
/// (`ca.pem` + `ca.key`), as `<name>.pem` and `<name>.key` there. Returns the two paths.
///
/// # Errors
/// When the CA cannot be read or the files cannot be written.
pub fn issue(dir: &Path, spiffe_id: &str, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let issuer = load_issuer(dir)?;
    let key = KeyPair::generate()?;
    let cert = client_params(spiffe_id, name)?.signed_by(&key, &issuer)?;
    let (cert_name, key_name) = (format!("{name}.pem"), format!("{name}.key"));
    write(dir, &cert_name, &cert.pem(), false)?;
    write(dir, &key_name, &key.serialize_pem(), true)?;
    Ok((dir.join(cert_name), dir.join(key_name)))
}

/// Replaces the server certificate and key in `dir` with new ones (a new serial) signed by
/// the development CA there: what a certificate rotation does.
///
/// # Errors
/// When the CA cannot be read or the files cannot be written.
pub fn renew_server_cert(dir: &Path) -> anyhow::Result<()> {
    let issuer = load_issuer(dir)?;
    write_server_cert(dir, &issuer)
}

fn load_issuer(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let certs = DevCerts {
        dir: dir.to_path_buf(),
    };
    let ca_key_pem = fs::read_to_string(certs.ca_key())
        .with_context(|| format!("cannot read {}", certs.ca_key().display()))?;
    let ca_pem = fs::read_to_string(certs.ca_cert())
        .with_context(|| format!("cannot read {}", certs.ca_cert().display()))?;
    Ok(Issuer::from_ca_cert_pem(
        &ca_pem,
        KeyPair::from_pem(&ca_key_pem)?,
    )?)
}

fn write_server_cert(dir: &Path, issuer: &Issuer<'_, KeyPair>) -> anyhow::Result<()> {
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "tenantd");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    let server_cert = server.signed_by(&server_key, issuer)?;
    // Key first: a reload between the two writes then fails (the key does not match the
    // old certificate) and keeps the old pair in force.
    write(dir, "server.key", &server_key.serialize_pem(), true)?;
    write(dir, "server.pem", &server_cert.pem(), false)
}

/// Parameters of a client certificate whose only identity is the SAN URI `spiffe_id`.
///
/// # Errors
/// When `spiffe_id` is not a valid IA5 string.
pub fn client_params(spiffe_id: &str, common_name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn write(dir: &Path, name: &str, contents: &str, private: bool) -> anyhow::Result<()> {
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn issues_client_certificates_carrying_the_spiffe_id() {
        let dir = tempfile::tempdir().unwrap();
        ensure(dir.path(), "tenantd.local", false).unwrap();
        let (cert, key) = issue(
            dir.path(),
            "spiffe://tenantd.local/service/billing",
            "service-billing",
        )
        .unwrap();
        assert!(key.is_file());
        let pem = fs::read(cert).unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        assert_eq!(
            crate::identity::principal_of(&der.contents, "tenantd.local"),
            Some(tenantd_domain::Principal::Service("billing".into()))
        );
    }

    #[test]
    fn generates_once_then_reuses_with_private_keys_unreadable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let (certs, generated) = ensure(dir.path(), "tenantd.local", false).unwrap();
        assert!(generated);
        let first = fs::read(certs.ca_cert()).unwrap();
        let (_, generated) = ensure(dir.path(), "tenantd.local", false).unwrap();
        assert!(!generated);
        assert_eq!(fs::read(certs.ca_cert()).unwrap(), first);
        let mode = fs::metadata(certs.admin_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key readable by group/others");
        let (_, generated) = ensure(dir.path(), "tenantd.local", true).unwrap();
        assert!(generated);
        assert_ne!(fs::read(certs.ca_cert()).unwrap(), first);
    }
}
