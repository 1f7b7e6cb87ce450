//! The one merge of the configuration layers. Clap parses the command line; every layer
//! below it — built-in defaults, the TOML file, the plain variables, the `TENANTD_*`
//! variables, in rising precedence — is folded into the arguments' defaults before the
//! parse, so a value from any layer goes through the same parser and range check as a
//! flag. The [`Environment`] given is the only source of variables: the parse does not
//! read the process environment (only `--help`, rendered from the command as written,
//! shows the variables' current values).
//!
//! Refused, each with one line naming it: an unknown `TENANTD_*` variable, an unknown or
//! malformed file key, a value a setting does not accept (from the command line, the file
//! or a variable). Other usage errors (an unknown flag) are clap's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::Path;

use clap::builder::Resettable;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory as _, FromArgMatches as _};

use super::{Cli, ConfigError};

/// Unprefixed variables read as a lower layer of a setting: (setting, variable).
pub(super) const PLAIN_VARIABLES: [(&str, &str); 3] = [
    ("database_url", "DATABASE_URL"),
    ("redis_url", "REDIS_URL"),
    ("kafka_brokers", "KAFKA_BROKERS"),
];

/// The prefix of tenantd's own variables: one it does not know is a typo.
const PREFIX: &str = "TENANTD_";

/// Process variables as the configuration sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment(BTreeMap<String, String>);

impl Environment {
    /// The process's variables (those that are valid UTF-8).
    pub fn process() -> Self {
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    /// Exactly these variables.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Why the command line was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A usage error, or `--help` / `--version`: clap prints it and picks the exit code.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// A bad setting.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Where an argument's lowest-precedence-but-one value came from.
#[derive(Debug, Clone)]
enum Source {
    File { path: String, key: String },
    Variable(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { path, key } => write!(f, "key `{key}` of {path}"),
            Self::Variable(name) => write!(f, "variable {name}"),
        }
    }
}

/// A TOML file's settings: key -> values.
type FileValues = HashMap<String, Vec<String>>;

/// Parses `argv` with `env` (and the file `--config` names, if any) into the command to
/// run, its settings merged from every layer.
///
/// # Errors
/// [`LoadError::Cli`] for usage errors, `--help` and `--version`; [`LoadError::Config`] for
/// a bad setting, file key or variable.
pub fn parse<I, T>(argv: I, env: &Environment) -> Result<Cli, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let base = Cli::command();
    check_variables(&base, env)?;
    // First without a file, to learn which file (`--config` or TENANTD_CONFIG) to read.
    let first = matches(&base, &argv, &FileValues::new(), None, env)?;
    let cli = Cli::from_arg_matches(&first).map_err(LoadError::Cli)?;
    let Some(path) = cli.settings().and_then(|s| s.config.clone()) else {
        return Ok(cli);
    };
    let file = read_file(&path, &base)?;
    let layered = matches(&base, &argv, &file, Some(&path), env)?;
    Cli::from_arg_matches(&layered).map_err(LoadError::Cli)
}

/// Parses `argv` with `file` and `env` folded into the defaults of `base`'s arguments.
fn matches(
    base: &Command,
    argv: &[OsString],
    file: &FileValues,
    path: Option<&Path>,
    env: &Environment,
) -> Result<ArgMatches, LoadError> {
    let mut sources = HashMap::new();
    let path = path.map(|p| p.display().to_string()).unwrap_or_default();
    let layered = layer(base.clone(), file, &path, env, &mut sources);
    layered.try_get_matches_from(argv).map_err(|err| {
        match err.kind() {
            // Rendered by the command as written, with each setting's variable and default.
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            | ErrorKind::DisplayVersion => base
                .clone()
                .try_get_matches_from(argv)
                .err()
                .map_or(LoadError::Cli(err), LoadError::Cli),
            ErrorKind::ValueValidation | ErrorKind::InvalidValue => match invalid_setting(&err) {
                Some(id) => {
                    let from = match sources.get(&id) {
                        Some(source) if !given_on_command_line(argv, &id) => source.to_string(),
                        _ => "command line".to_owned(),
                    };
                    LoadError::Config(ConfigError::new(
                        id.replace('_', "-"),
                        format!("{} (from the {from})", first_line(&err)),
                    ))
                }
                None => LoadError::Cli(err),
            },
            _ => LoadError::Cli(err),
        }
    })
}

/// `cmd` and its subcommands with the file's and the environment's values as defaults,
/// and without reading the process environment; records where each value came from.
fn layer(
    cmd: Command,
    file: &FileValues,
    path: &str,
    env: &Environment,
    sources: &mut HashMap<String, Source>,
) -> Command {
    let cmd = cmd.mut_args(|arg| layer_arg(arg, file, path, env, sources));
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    names.into_iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, |sub| layer(sub, file, path, env, sources))
    })
}

fn layer_arg(
    arg: Arg,
    file: &FileValues,
    path: &str,
    env: &Environment,
    sources: &mut HashMap<String, Source>,
) -> Arg {
    let id = arg.get_id().as_str().to_owned();
    let variable = arg.get_env().and_then(OsStr::to_str).map(str::to_owned);
    let mut arg = arg.env(Resettable::Reset);
    if let Some(values) = file.get(&id) {
        arg = arg.default_values(values.clone());
        sources.insert(
            id.clone(),
            Source::File {
                path: path.to_owned(),
                key: id.clone(),
            },
        );
    }
    let plain = PLAIN_VARIABLES
        .iter()
        .find(|(setting, _)| *setting == id)
        .map(|(_, name)| (*name).to_owned());
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    for name in plain.into_iter().chain(variable) {
        if let Some(value) = env.get(&name) {
            // A repeatable setting's variable holds its values separated by white space.
            arg = if repeatable {
                arg.default_values(value.split_whitespace().map(str::to_owned))
            } else {
                arg.default_value(value.to_owned())
            };
            sources.insert(id.clone(), Source::Variable(name));
        }
    }
    arg
}

/// Refuses a `TENANTD_*` variable that no setting reads (a typo would be ignored).
fn check_variables(base: &Command, env: &Environment) -> Result<(), ConfigError> {
    let known = variables(base);
    for name in env.0.keys().filter(|name| name.starts_with(PREFIX)) {
        if !known.contains(name) {
            return Err(ConfigError::new(
                name.clone(),
                format!(
                    "no setting reads this variable{}",
                    suggestion(name, known.iter().map(String::as_str))
                ),
            ));
        }
    }
    Ok(())
}

/// Every variable a setting of `cmd` (or of its subcommands) reads.
fn variables(cmd: &Command) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env()?.to_str().map(str::to_owned))
        .collect();
    for sub in cmd.get_subcommands() {
        names.extend(variables(sub));
    }
    names
}

/// The settings a file may hold: the arguments of the serve settings that have a variable,
/// but the file itself.
fn file_keys(base: &Command) -> BTreeSet<String> {
    base.get_arguments()
        .filter(|a| a.get_env().is_some() && a.get_id() != "config")
        .map(|a| a.get_id().as_str().to_owned())
        .collect()
}

fn read_file(path: &Path, base: &Command) -> Result<FileValues, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config", format!("cannot read {shown}: {e}")))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| ConfigError::new("config", format!("{shown}: {}", e.message().trim_end())))?;
    let keys = file_keys(base);
    let mut values = FileValues::new();
    for (key, value) in table {
        if !keys.contains(&key) {
            return Err(ConfigError::new(
                "config",
                format!(
                    "{shown}: unknown key `{key}`{}",
                    suggestion(&key, keys.iter().map(String::as_str))
                ),
            ));
        }
        let repeatable = base
            .get_arguments()
            .find(|a| a.get_id() == key.as_str())
            .is_some_and(|a| matches!(a.get_action(), ArgAction::Append));
        let texts = match value {
            toml::Value::Array(items) if repeatable => items.into_iter().map(scalar).collect(),
            toml::Value::Array(_) => {
                return Err(ConfigError::new(
                    "config",
                    format!("{shown}: `{key}` takes one value, not a list"),
                ));
            }
            other => vec![scalar(other)],
        };
        let texts = texts
            .into_iter()
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| {
                ConfigError::new(
                    "config",
                    format!("{shown}: `{key}` must be a string, number or boolean"),
                )
            })?;
        values.insert(key, texts);
    }
    Ok(values)
}

/// A scalar TOML value as the text a flag would carry.
fn scalar(value: toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// ` (did you mean X?)` when a known name is close to `name` (compared without the prefix
/// every variable shares).
fn suggestion<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let bare = |n: &'a str| n.strip_prefix(PREFIX).unwrap_or(n);
    let name = name.strip_prefix(PREFIX).unwrap_or(name);
    known
        .map(|candidate| (strsim::jaro_winkler(name, bare(candidate)), candidate))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or_else(String::new, |(_, best)| format!(" (did you mean {best}?)"))
}

/// The id of the argument a value error is about (`--listen <LISTEN>` -> `listen`).
fn invalid_setting(err: &clap::Error) -> Option<String> {
    let ContextValue::String(arg) = err.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    Some(long.replace('-', "_"))
}

/// Whether `argv` sets the argument `id` itself.
fn given_on_command_line(argv: &[OsString], id: &str) -> bool {
    let flag = format!("--{}", id.replace('_', "-"));
    argv.iter().filter_map(|a| a.to_str()).any(|a| {
        a == flag
            || a.strip_prefix(flag.as_str())
                .is_some_and(|rest| rest.starts_with('='))
    })
}

/// The first line of a clap error, without its `error: ` label.
fn first_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}
