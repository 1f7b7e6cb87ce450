//! What tenantctl prints: a table (the default), or the response message in the proto's
//! JSON mapping (`-o json`, default values included, so scripts find every field) or the
//! same as YAML (`-o yaml`); and errors with their code, reason and field violations.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use tonic_types::StatusExt as _;

/// The output format (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// The response in the proto's JSON mapping.
    Json,
    /// The same document as YAML.
    Yaml,
}

/// Rows under a header, printed as aligned columns.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// A two-column FIELD / VALUE table of `pairs`, skipping empty values.
    pub fn fields(pairs: Vec<(&'static str, String)>) -> Self {
        let mut table = Self::new(&["FIELD", "VALUE"]);
        for (field, value) in pairs.into_iter().filter(|(_, v)| !v.is_empty()) {
            table.row(vec![field.to_owned(), value]);
        }
        table
    }

    /// The table as text: columns two spaces apart, no blanks at the ends of lines.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                let _ = write!(line, "{cell}{:pad$}", "");
            }
            // Empty cells at the end leave no trailing blanks.
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints responses in the chosen format.
pub struct Printer {
    format: Format,
    pool: DescriptorPool,
}

impl Printer {
    /// A printer of `format`, knowing every tenant.v1 message.
    ///
    /// # Errors
    /// Never in practice: the descriptor set is the one compiled in.
    pub fn new(format: Format) -> anyhow::Result<Self> {
        let pool = DescriptorPool::decode(tenantd_server::proto::FILE_DESCRIPTOR_SET)
            .context("the compiled-in descriptor set")?;
        Ok(Self { format, pool })
    }

    /// The chosen format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// `message` in the proto's JSON mapping, default values included.
    ///
    /// # Errors
    /// When the message is not in the descriptor set.
    pub fn json<M: Message + Name>(&self, message: &M) -> anyhow::Result<serde_json::Value> {
        let name = M::full_name();
        let descriptor = self
            .pool
            .get_message_by_name(&name)
            .with_context(|| format!("{name} is not a tenant.v1 message"))?;
        let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
        let options = SerializeOptions::new().skip_default_fields(false);
        Ok(dynamic.serialize_with_options(serde_json::value::Serializer, &options)?)
    }

    /// Prints `message`: as `table` makes it, or as JSON/YAML.
    ///
    /// # Errors
    /// When it cannot be encoded.
    pub fn print<M: Message + Name>(
        &self,
        message: &M,
        table: impl FnOnce(&M) -> Table,
    ) -> anyhow::Result<()> {
        self.render(message, table, false)
    }

    /// Prints each message of `stream` until it ends: a table redrawn in place on a
    /// terminal, else one table per message; one JSON object per line; one YAML document
    /// each.
    ///
    /// # Errors
    /// The stream's status, or a message that cannot be encoded.
    pub async fn follow<M: Message + Name + Default>(
        &self,
        mut stream: tonic::Streaming<M>,
        table: impl Fn(&M) -> Table,
    ) -> Result<(), crate::Failure> {
        let live = self.format == Format::Table && std::io::stdout().is_terminal();
        let mut first = true;
        while let Some(update) = stream.message().await? {
            if live {
                emit("\x1b[H\x1b[2J")?;
            } else if !first && self.format == Format::Table {
                emit("\n")?;
            }
            first = false;
            self.render(&update, &table, true)?;
        }
        Ok(())
    }

    fn render<M: Message + Name>(
        &self,
        message: &M,
        table: impl FnOnce(&M) -> Table,
        streamed: bool,
    ) -> anyhow::Result<()> {
        match self.format {
            Format::Table => emit(&table(message).render())?,
            Format::Json if streamed => {
                emit(&format!(
                    "{}\n",
                    serde_json::to_string(&self.json(message)?)?
                ))?;
            }
            Format::Json => emit(&format!(
                "{}\n",
                serde_json::to_string_pretty(&self.json(message)?)?
            ))?,
            Format::Yaml => {
                let separator = if streamed { "---\n" } else { "" };
                emit(&format!(
                    "{separator}{}",
                    serde_norway::to_string(&self.json(message)?)?
                ))?;
            }
        }
        Ok(())
    }
}

/// A step's or a rollout's error as `REASON: message`; empty when there is none.
pub fn step_error(error: Option<&tenantd_server::proto::StepError>) -> String {
    error
        .map(|e| format!("{}: {}", e.reason, e.message))
        .unwrap_or_default()
}

/// Writes `text` to standard output. A reader that went away (`| head`) is an error the
/// caller ends quietly on (see [`reader_gone`]).
///
/// # Errors
/// When standard output cannot be written.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Whether `err` is standard output's reader having gone away.
pub fn reader_gone(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A timestamp as RFC 3339 in UTC to the second; empty when unset.
pub fn time(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| {
            DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        })
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// An enum value's name without its type prefix (`TENANT_STATUS_ACTIVE` -> `ACTIVE`).
pub fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

/// A status as the user reads it: the code, the reason of its ErrorInfo, the message, and
/// each field violation on a line of its own.
pub fn describe(status: &tonic::Status) -> String {
    let code = format!("{:?}", status.code());
    let mut out = format!("error: {}", upper_snake(&code));
    if let Some(info) = status.get_details_error_info() {
        let _ = write!(out, " ({})", info.reason);
    }
    let _ = write!(out, ": {}", status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for violation in &bad.field_violations {
            let _ = write!(out, "\n  {}: {}", violation.field, violation.description);
        }
    }
    if let Some(retry) = status.get_details_retry_info()
        && let Some(delay) = retry.retry_delay
    {
        let _ = write!(out, "\n  retry after {delay:?}");
    }
    out
}

/// `NotFound` -> `NOT_FOUND`.
fn upper_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_end_without_blanks() {
        let mut table = Table::new(&["ID", "STATUS", "ERROR"]);
        table.row(vec!["a-long-id".into(), "ACTIVE".into(), String::new()]);
        table.row(vec!["b".into(), "SUSPENDED".into(), "boom".into()]);
        assert_eq!(
            table.render(),
            "ID         STATUS     ERROR\na-long-id  ACTIVE\nb          SUSPENDED  boom\n"
        );
    }

    #[test]
    fn a_status_reads_with_its_code_reason_and_violations() {
        let status =
            tenantd_server::grpc::status::to_status(tenantd_domain::Error::invalid_fields(vec![
                tenantd_domain::FieldViolation {
                    field: "tenant.slug".into(),
                    description: "must start with a letter".into(),
                },
            ]));
        let text = describe(&status);
        assert!(
            text.starts_with("error: INVALID_ARGUMENT (FIELD_INVALID): "),
            "{text}"
        );
        assert!(
            text.ends_with("\n  tenant.slug: must start with a letter"),
            "{text}"
        );
    }

    #[test]
    fn json_is_the_proto_mapping_with_defaults() {
        let printer = Printer::new(Format::Json).unwrap();
        let verified = tenantd_server::proto::VerifyApiKeyResponse {
            valid: false,
            tenant_id: "t".into(),
            ..Default::default()
        };
        let json = printer.json(&verified).unwrap();
        assert_eq!(json["valid"], false, "a default value is printed");
        assert_eq!(json["tenantId"], "t", "lowerCamelCase names");
    }
}
