//! Prometheus-style counters and histograms, rendered as text at `/metrics`. Small and
//! lock-light on purpose: recording is a few atomic adds on the command and projection paths.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency buckets.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation, in seconds.
    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The bucket holding the `q`-quantile (`0.0..=1.0`), as `(lower, upper]` bounds in
    /// seconds — exactly what the buckets can say, without interpolating inside one. The
    /// upper bound is infinite when the quantile lies above the last bucket; `None` when
    /// nothing was recorded. For reading figures in process (the `bench` binary).
    pub fn quantile_bucket(&self, q: f64) -> Option<(f64, f64)> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: the smallest n with n >= q * count.
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut lower = 0.0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if bucket.load(Ordering::Relaxed) >= rank {
                return Some((lower, *bound));
            }
            lower = *bound;
        }
        Some((lower, f64::INFINITY))
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Histograms keyed by a label set such as `command="createTicket",outcome="ok"`.
#[derive(Debug, Default)]
pub struct HistogramFamily {
    series: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
}

impl HistogramFamily {
    /// Records `seconds` under `labels` (already rendered as `k="v",...`).
    pub fn observe(&self, labels: String, seconds: f64) {
        let histogram = {
            let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
            series.entry(labels).or_default().clone()
        };
        histogram.observe(seconds);
    }

    /// The histogram recorded under `labels` (rendered as `k="v",...`), if any.
    pub fn series(&self, labels: &str) -> Option<std::sync::Arc<Histogram>> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.get(labels).cloned()
    }

    /// Appends the family in Prometheus text format.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, histogram) in series.iter() {
            histogram.render(name, labels, out);
        }
    }
}

/// Counters keyed by a label set.
#[derive(Debug, Default)]
pub struct CounterFamily {
    series: Mutex<BTreeMap<String, u64>>,
}

impl CounterFamily {
    /// Adds `n` under `labels`.
    pub fn add(&self, labels: String, n: u64) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        *series.entry(labels).or_default() += n;
    }

    /// Appends the family in Prometheus text format.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, value) in series.iter() {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Escapes a label value.
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_cumulatively() {
        let family = HistogramFamily::default();
        family.observe("p=\"a\"".into(), 0.003);
        family.observe("p=\"a\"".into(), 0.2);
        let mut out = String::new();
        family.render("lag_seconds", "help", &mut out);
        assert!(
            out.contains("lag_seconds_bucket{p=\"a\",le=\"0.005\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("lag_seconds_bucket{p=\"a\",le=\"0.25\"} 2"),
            "{out}"
        );
        assert!(out.contains("lag_seconds_count{p=\"a\"} 2"), "{out}");
    }

    #[test]
    fn quantile_bucket_names_the_bucket_holding_the_quantile() {
        let family = HistogramFamily::default();
        assert!(family.series("p=\"a\"").is_none());
        for _ in 0..98 {
            family.observe("p=\"a\"".into(), 0.003);
        }
        family.observe("p=\"a\"".into(), 0.07);
        family.observe("p=\"a\"".into(), 45.0);
        let histogram = family.series("p=\"a\"").unwrap();
        assert_eq!(histogram.count(), 100);
        assert_eq!(histogram.quantile_bucket(0.5), Some((0.0025, 0.005)));
        assert_eq!(histogram.quantile_bucket(0.99), Some((0.05, 0.1)));
        assert_eq!(histogram.quantile_bucket(1.0), Some((30.0, f64::INFINITY)));
        assert_eq!(Histogram::default().quantile_bucket(0.99), None);
    }
}
