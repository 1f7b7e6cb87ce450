//! Where tenantctl connects: named contexts in a config file (endpoint, CA, client
//! certificate and key), the current one, and the defaults of a development setup (the
//! default address and the certificates under `.tenantd/dev-certs/`).
//!
//! The file is `--config-file`, else `$TENANTCTL_CONFIG`, else
//! `$XDG_CONFIG_HOME/tenantctl/config.toml`, else `~/.config/tenantctl/config.toml`:
//!
//! ```toml
//! current = "prod"
//!
//! [contexts.prod]
//! endpoint = "tenantd.example.com:50051"
//! ca = "/etc/tenantctl/ca.pem"
//! cert = "/etc/tenantctl/admin.pem"
//! key = "/etc/tenantctl/admin.key"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The address tenantd listens on by default.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:50051";

/// Where `tenantd` writes its development certificates by default (relative to the
/// directory it runs in).
pub const DEFAULT_DEV_CERTS: &str = ".tenantd/dev-certs";

/// One way to reach a tenantd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// `host:port`.
    pub endpoint: String,
    /// The CA that signed the server's certificate (PEM).
    pub ca: PathBuf,
    /// The client certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The name the server's certificate must carry, when not the endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// The config file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Config {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Every context, by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// The config file's path.
pub fn config_path(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("TENANTCTL_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let base =
        match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(std::env::var_os("HOME").context(
                "no HOME to find ~/.config/tenantctl/config.toml in: pass --config-file",
            )?)
            .join(".config"),
        };
    Ok(base.join("tenantctl").join("config.toml"))
}

impl Config {
    /// Reads `path`; a missing file is an empty config.
    ///
    /// # Errors
    /// When it exists but cannot be read or parsed.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("{}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes it to `path` (its directory made if needed), readable by its owner only.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self)?;
        // A temporary file of this process's own, readable by its owner from the start,
        // then renamed over the file: a reader sees the old file or the new one.
        let temporary = path.with_extension(format!("toml.{}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let written = options
            .open(&temporary)
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, text.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temporary, path));
        if written.is_err() {
            let _removed = std::fs::remove_file(&temporary);
        }
        written.with_context(|| format!("cannot write {}", path.display()))
    }

    /// The context named `name`, else the current one, if any.
    ///
    /// # Errors
    /// When a context is named that does not exist.
    pub fn selected(&self, name: Option<&str>) -> anyhow::Result<Option<(&str, &Context)>> {
        let Some(name) = name.or(self.current.as_deref()) else {
            return Ok(None);
        };
        match self.contexts.get_key_value(name) {
            Some((name, context)) => Ok(Some((name.as_str(), context))),
            None => bail!(
                "no context {name:?} (known: {})",
                if self.contexts.is_empty() {
                    "none; add one with `tenantctl context add`".to_owned()
                } else {
                    self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
        }
    }
}

/// Connection flags given on the command line (each overrides the context's).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub endpoint: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
    pub dev_certs: PathBuf,
}

/// Where to connect: the flags, else the context, else the development defaults.
pub fn resolve(context: Option<&Context>, flags: &Overrides) -> Context {
    let dev = |file: &str| flags.dev_certs.join(file);
    Context {
        endpoint: flags
            .endpoint
            .clone()
            .or_else(|| context.map(|c| c.endpoint.clone()))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
        ca: flags
            .ca
            .clone()
            .or_else(|| context.map(|c| c.ca.clone()))
            .unwrap_or_else(|| dev("ca.pem")),
        cert: flags
            .cert
            .clone()
            .or_else(|| context.map(|c| c.cert.clone()))
            .unwrap_or_else(|| dev("admin.pem")),
        key: flags
            .key
            .clone()
            .or_else(|| context.map(|c| c.key.clone()))
            .unwrap_or_else(|| dev("admin.key")),
        server_name: flags
            .server_name
            .clone()
            .or_else(|| context.and_then(|c| c.server_name.clone())),
    }
}

/// `path` made absolute against the current directory (a context outlives it).
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(endpoint: &str) -> Context {
        Context {
            endpoint: endpoint.into(),
            ca: "/c/ca.pem".into(),
            cert: "/c/a.pem".into(),
            key: "/c/a.key".into(),
            server_name: None,
        }
    }

    #[test]
    fn flags_beat_the_context_which_beats_the_development_defaults() {
        let flags = Overrides {
            dev_certs: ".tenantd/dev-certs".into(),
            ..Overrides::default()
        };
        let defaults = resolve(None, &flags);
        assert_eq!(defaults.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(defaults.cert, PathBuf::from(".tenantd/dev-certs/admin.pem"));
        let from_context = resolve(Some(&context("prod:50051")), &flags);
        assert_eq!(from_context, context("prod:50051"));
        let flagged = resolve(
            Some(&context("prod:50051")),
            &Overrides {
                endpoint: Some("other:1".into()),
                key: Some("/k".into()),
                ..flags
            },
        );
        assert_eq!(
            (flagged.endpoint.as_str(), flagged.key, flagged.ca),
            ("other:1", PathBuf::from("/k"), PathBuf::from("/c/ca.pem"))
        );
    }

    #[test]
    fn contexts_round_trip_through_the_file_and_unknown_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/config.toml");
        assert!(Config::load(&path).unwrap().contexts.is_empty());
        let mut config = Config::default();
        config.contexts.insert("prod".into(), context("prod:50051"));
        config.current = Some("prod".into());
        config.save(&path).unwrap();
        let loaded = Config::load(&path).unwrap();
        assert_eq!(
            loaded.selected(None).unwrap(),
            Some(("prod", &context("prod:50051")))
        );
        let err = loaded.selected(Some("staging")).unwrap_err().to_string();
        assert!(
            err.contains("no context \"staging\" (known: prod)"),
            "{err}"
        );
    }
}
