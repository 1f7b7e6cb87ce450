//! The process's own series, as every Prometheus client library exports them
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`, `process_virtual_memory_bytes`,
//! `process_threads`: read from `/proc/self` at each scrape), and `tenantd_build_info{version,
//! commit}` (always 1), by which dashboards tell replicas of different builds apart.

#[cfg(target_os = "linux")]
use prometheus::core::{Collector, Desc};
#[cfg(target_os = "linux")]
use prometheus::proto::MetricFamily;
#[cfg(target_os = "linux")]
use prometheus::{Counter, Gauge};
use prometheus::{IntGaugeVec, Opts, Registry};

/// This build's version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit this build is of (git's short hash; `unknown` outside a checkout).
pub const COMMIT: &str = env!("TENANTD_COMMIT");

/// Registers the process's series and the build-info gauge in `registry`.
///
/// # Errors
/// When a metric is already registered.
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    #[cfg(target_os = "linux")]
    registry.register(Box::new(ProcessCollector::new()?))?;
    let info = IntGaugeVec::new(
        Opts::new(
            "tenantd_build_info",
            "The build serving: its version and commit (always 1).",
        ),
        &["version", "commit"],
    )?;
    info.with_label_values(&[VERSION, COMMIT]).set(1);
    registry.register(Box::new(info))?;
    Ok(())
}

/// The process's series, read from `/proc/self` at each scrape (Linux only: elsewhere
/// `/metrics` has no `process_*` series). (The prometheus crate's
/// own collector counts CPU time in whole seconds, which a quiet replica's `rate()` cannot
/// use; this one keeps the clock ticks' resolution.)
#[cfg(target_os = "linux")]
struct ProcessCollector {
    /// Serializes concurrent scrapes' reads (the CPU counter only moves by differences).
    reading: std::sync::Mutex<()>,
    cpu: Counter,
    open_fds: Gauge,
    max_fds: Gauge,
    virtual_memory: Gauge,
    resident_memory: Gauge,
    start_time: Gauge,
    threads: Gauge,
    descs: Vec<Desc>,
}

#[cfg(target_os = "linux")]
#[expect(
    clippy::cast_precision_loss,
    reason = "Prometheus samples are f64; counts, bytes and ticks here stay far below 2^52"
)]
impl ProcessCollector {
    fn new() -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| Gauge::new(name, help);
        let collector = Self {
            reading: std::sync::Mutex::new(()),
            cpu: Counter::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            )?,
            open_fds: gauge("process_open_fds", "Number of open file descriptors.")?,
            max_fds: gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            )?,
            virtual_memory: gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            )?,
            resident_memory: gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            )?,
            start_time: gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            )?,
            threads: gauge("process_threads", "Number of OS threads in the process.")?,
            descs: Vec::new(),
        };
        let descs = collector
            .parts()
            .iter()
            .flat_map(|part| part.desc())
            .cloned()
            .collect();
        let collector = Self { descs, ..collector };
        if let (Ok(boot), Ok(stat)) = (
            procfs::boot_time_secs(),
            procfs::process::Process::myself().and_then(|p| p.stat()),
        ) {
            collector
                .start_time
                .set(boot as f64 + stat.starttime as f64 / procfs::ticks_per_second() as f64);
        }
        Ok(collector)
    }

    fn parts(&self) -> [&dyn Collector; 7] {
        [
            &self.cpu,
            &self.open_fds,
            &self.max_fds,
            &self.virtual_memory,
            &self.resident_memory,
            &self.start_time,
            &self.threads,
        ]
    }

    /// Reads `/proc/self` into the series; what cannot be read keeps its last value.
    fn read(&self) {
        let _reading = self
            .reading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Ok(me) = procfs::process::Process::myself() else {
            return;
        };
        if let Ok(count) = me.fd_count() {
            self.open_fds.set(count as f64);
        }
        if let Ok(limits) = me.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            self.max_fds.set(max as f64);
        }
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            // Concurrent scrapes: the counter never goes back.
            self.cpu.inc_by((cpu - self.cpu.get()).max(0.0));
            self.virtual_memory.set(stat.vsize as f64);
            self.resident_memory
                .set(stat.rss as f64 * procfs::page_size() as f64);
            self.threads.set(stat.num_threads as f64);
        }
    }
}

#[cfg(target_os = "linux")]
impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.read();
        self.parts()
            .iter()
            .flat_map(|part| part.collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn the_process_series_and_the_build_info_are_exported() {
        let registry = Registry::new();
        register(&registry).unwrap();
        // Some CPU time, well under a second: the counter must show it.
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(spin.elapsed());
        }
        let families = registry.gather();
        let named = |name: &str| families.iter().find(|f| f.name() == name);
        for series in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let family = named(series).unwrap_or_else(|| panic!("no {series}"));
            assert!(!family.get_metric().is_empty(), "{series} has no sample");
        }
        let rss = named("process_resident_memory_bytes").unwrap().get_metric()[0]
            .get_gauge()
            .get_value();
        assert!(rss > 1_000_000.0, "resident memory of {rss} bytes");
        let cpu = named("process_cpu_seconds_total").unwrap().get_metric()[0]
            .get_counter()
            .get_value();
        assert!(cpu > 0.0 && cpu < 60.0, "cpu seconds {cpu}");
        let info = &named("tenantd_build_info").unwrap().get_metric()[0];
        let labels: Vec<(&str, &str)> = info
            .get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .collect();
        assert_eq!(labels, [("commit", COMMIT), ("version", VERSION)]);
        assert!(!COMMIT.is_empty());
        assert!((info.get_gauge().get_value() - 1.0).abs() < f64::EPSILON);
    }
}
