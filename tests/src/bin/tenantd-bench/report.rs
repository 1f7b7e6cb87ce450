//! The run's results: one row per scenario and floor, printed as a table (with each
//! scenario's ratio to its floor and the target for it) and written as JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// `v` as a float: counts and microseconds stay far below 2^52.
#[expect(clippy::cast_precision_loss, reason = "values far below 2^52")]
pub fn float(v: u64) -> f64 {
    v as f64
}

/// Throughput and latency of one scenario or floor.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Calls (or transactions) per second.
    pub rps: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile, where the tool reports it.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile, where the tool reports it.
    pub p999_ms: Option<f64>,
}

impl Measured {
    /// From a rate and a histogram of microseconds.
    pub fn from_histogram(rps: f64, latencies: &Histogram<u64>) -> Self {
        let ms = |q: f64| float(latencies.value_at_quantile(q)) / 1e3;
        Self {
            rps,
            p50_ms: ms(0.5),
            p90_ms: Some(ms(0.9)),
            p99_ms: ms(0.99),
            p999_ms: Some(ms(0.999)),
        }
    }

    /// From the load generator's JSON.
    ///
    /// # Errors
    /// When a field is missing.
    pub fn from_load(value: &Value) -> anyhow::Result<Self> {
        let field = |name: &str| {
            value[name]
                .as_f64()
                .ok_or_else(|| anyhow::anyhow!("no {name} in the load generator's output"))
        };
        Ok(Self {
            rps: field("rps")?,
            p50_ms: field("p50_ms")?,
            p90_ms: Some(field("p90_ms")?),
            p99_ms: field("p99_ms")?,
            p999_ms: Some(field("p999_ms")?),
        })
    }
}

/// A scenario's target: at least `min_ratio` of the floor named `floor`.
#[derive(Debug, Clone)]
pub struct Target {
    /// The floor's row name.
    pub floor: &'static str,
    /// The floor's short name, for the table.
    pub label: &'static str,
    /// The least ratio wanted.
    pub min_ratio: f64,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Scenario or floor.
    pub name: String,
    /// What it measured.
    pub measured: Measured,
    /// The server's CPU use during the phase, in percent of one core (tenantd rows).
    pub server_cpu: Option<f64>,
    /// PostgreSQL's and Redis's CPU use during the phase, in percent of one core (tenantd
    /// rows).
    pub store_cpu: Option<f64>,
    /// What it is compared with.
    pub target: Option<Target>,
    /// Whether it is a floor (others are compared with one, or with nothing).
    pub floor: bool,
}

/// tenantd's resident memory when idle must stay below this (MiB)...
pub const RSS_IDLE_MIB: f64 = 40.0;
/// ...and under the heaviest load, and with 1,000 open watch streams, below this.
pub const RSS_PEAK_MIB: f64 = 150.0;

/// Every row and the memory readings of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// In the order measured.
    pub rows: Vec<Row>,
    /// (configuration, idle MiB, peak MiB under load).
    pub rss: Vec<(String, f64, f64)>,
    /// Floors measured twice: the first run's row name -> the second's.
    pub again: std::collections::HashMap<&'static str, &'static str>,
}

impl Report {
    /// The row named `name`.
    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// `row`'s ratio to its floor, when both were measured.
    pub fn ratio(&self, row: &Row) -> Option<f64> {
        let target = row.target.as_ref()?;
        Some(row.measured.rps / self.floor_rps(target.floor)?)
    }

    /// The rate of the floor `name`: the mean of its two runs when it was measured again
    /// (`again`), else its one run.
    fn floor_rps(&self, name: &str) -> Option<f64> {
        let first = self.row(name)?.measured.rps;
        Some(
            match self.again.get(name).and_then(|again| self.row(again)) {
                Some(again) => f64::midpoint(first, again.measured.rps),
                None => first,
            },
        )
    }

    /// The rows whose ratio is under their target.
    pub fn misses(&self) -> Vec<String> {
        let rss = self.rss.iter().flat_map(|(config, idle, peak)| {
            [
                (*idle >= RSS_IDLE_MIB)
                    .then(|| format!("RSS of tenantd ({config}) idle: {idle:.1} MiB (target < {RSS_IDLE_MIB} MiB)")),
                (*peak >= RSS_PEAK_MIB)
                    .then(|| format!("RSS of tenantd ({config}) at most: {peak:.1} MiB (target < {RSS_PEAK_MIB} MiB)")),
            ]
            .into_iter()
            .flatten()
        });
        self.rows
            .iter()
            .filter_map(|row| {
                let target = row.target.as_ref()?;
                let ratio = self.ratio(row)?;
                (ratio < target.min_ratio).then(|| {
                    format!(
                        "{}: {ratio:.2}x {} (target {:.2}x)",
                        row.name, target.label, target.min_ratio
                    )
                })
            })
            .chain(rss)
            .collect()
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<44} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6}  ratio to its floor (target)",
            "scenario", "calls/s", "p50 ms", "p99 ms", "p99.9 ms", "cpu %", "db %",
        );
        for row in &self.rows {
            let m = &row.measured;
            let ratio = match (&row.target, self.ratio(row)) {
                (Some(t), Some(r)) => {
                    let mark = if r >= t.min_ratio { "" } else { "  MISSED" };
                    format!("{r:.2}x {} (target {:.2}x){mark}", t.label, t.min_ratio)
                }
                _ if row.floor => "floor".to_owned(),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<44} {:>9.0} {:>8.2} {:>8.2} {:>8} {:>6} {:>6}  {ratio}",
                row.name,
                m.rps,
                m.p50_ms,
                m.p99_ms,
                m.p999_ms
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
                row.server_cpu
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
                row.store_cpu
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
            );
        }
        for (config, idle, peak) in &self.rss {
            let _ = writeln!(
                out,
                "RSS of tenantd ({config}): {idle:.1} MiB idle, {peak:.1} MiB at most under load \
                 (targets < {RSS_IDLE_MIB} / < {RSS_PEAK_MIB})"
            );
        }
        out
    }

    /// The JSON document.
    pub fn json(&self, environment: &Value) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let m = &row.measured;
                json!({
                    "scenario": row.name,
                    "rps": m.rps,
                    "p50_ms": m.p50_ms,
                    "p90_ms": m.p90_ms,
                    "p99_ms": m.p99_ms,
                    "p999_ms": m.p999_ms,
                    "server_cpu_percent": row.server_cpu,
                    "store_cpu_percent": row.store_cpu,
                    "floor": row.target.as_ref().map(|t| t.floor),
                    "target_ratio": row.target.as_ref().map(|t| t.min_ratio),
                    "ratio": self.ratio(row),
                })
            })
            .collect();
        let rss: Vec<Value> = self
            .rss
            .iter()
            .map(|(config, idle, peak)| json!({"configuration": config, "idle_mib": idle, "peak_mib": peak}))
            .collect();
        json!({ "environment": environment, "rows": rows, "rss": rss })
    }
}
