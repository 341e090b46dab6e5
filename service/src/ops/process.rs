//! The process's own metrics, read from `/proc` when Prometheus scrapes (Linux;
//! elsewhere they are left out). They use the names every Prometheus client
//! library uses (`process_*`), so that standard dashboards and alerts work.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports CPU times in clock ticks of `USER_HZ`, which is 100 on every
/// architecture Linux supports (it is part of the user-space ABI).
const USER_HZ: f64 = 100.0;

/// The process's resident memory, CPU time and descriptors, read from `/proc` at
/// each scrape. [`Metrics::new`](super::Metrics::new) registers it; a server
/// with a registry of its own (`chinwag echo`) registers it there.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

/// Resident memory in bytes, from `/proc/self/status` (`VmRSS`, in kB).
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User and system CPU time in seconds, from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Open file descriptors, from `/proc/self/fd`.
fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

/// The most descriptors the process may open, from `/proc/self/limits`.
fn max_fds() -> Option<i64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(bytes) = resident_bytes() {
            encode_gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size in bytes", bytes)?;
        }
        if let Some(seconds) = cpu_seconds() {
            let counter = ConstCounter::new(seconds);
            let help = "Total user and system CPU time spent in seconds";
            counter.encode(encoder.encode_descriptor("process_cpu_seconds", help, None, counter.metric_type())?)?;
        }
        if let Some(fds) = open_fds() {
            encode_gauge(&mut encoder, "process_open_fds", "Number of open file descriptors", fds)?;
        }
        if let Some(max) = max_fds() {
            encode_gauge(&mut encoder, "process_max_fds", "Maximum number of open file descriptors", max)?;
        }
        Ok(())
    }
}

/// Writes one gauge read at the scrape.
pub(crate) fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// Writes one counter read at the scrape (`_total` is added to `name`).
pub(crate) fn encode_counter<N: prometheus_client::encoding::EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        if !cfg!(target_os = "linux") {
            return;
        }
        assert!(resident_bytes().unwrap() > 1 << 20, "a test process holds more than 1 MiB");
        assert!(cpu_seconds().unwrap() >= 0.0);
        // Other tests open and close files meanwhile: only bounds are certain.
        let fds = open_fds().unwrap();
        assert!(fds >= 3, "stdin, stdout, stderr at least");
        assert!(max_fds().unwrap() >= fds);
    }
}
