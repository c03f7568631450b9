//! Prometheus metrics (prometheus crate), updated per batch, never per event. Names
//! follow `eventline_<name>_<unit>_total` for counters.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

/// Every metric the processor exports.
pub struct Metrics {
    registry: Registry,
    /// Records read from Kafka.
    pub consumed: IntCounter,
    /// Outcomes by outcome, event type and error class.
    pub outcomes: IntCounterVec,
    /// Panics caught in a stage, by stage (`validator`, `deduplicator`).
    pub stage_failures: IntCounterVec,
    /// Records per batch written, by sink.
    pub batch_size: HistogramVec,
    /// Seconds per write call, by sink.
    pub write_seconds: HistogramVec,
    /// Produce time (Kafka timestamp) to durably stored, by sink.
    pub end_to_end_seconds: HistogramVec,
    /// Accepted events later than `pipeline.late_after_s`, by event type.
    pub late_events: IntCounterVec,
    /// How late accepted events arrived (Kafka timestamp minus their own time).
    pub lateness_seconds: prometheus::Histogram,
    /// High watermark minus committed offset, by partition.
    pub consumer_lag: IntGaugeVec,
    /// Committed offset, by partition.
    pub committed_offset: IntGaugeVec,
    /// Durable progress (next offset), by sink and partition.
    pub sink_progress: IntGaugeVec,
    /// Batches held by a sink's supervisor, by sink.
    pub queue_depth: IntGaugeVec,
    /// Approximate bytes held by each sink supervisor.
    pub queue_bytes: IntGaugeVec,
    /// Restarts, by sink.
    pub sink_restarts: IntCounterVec,
    /// Partitions found moved on by another writer, by sink.
    pub sink_fenced: IntCounterVec,
    /// 1 when the sink's writer is up, 0 while restarting or given up.
    pub sink_up: IntGaugeVec,
    /// Published lake files.
    pub lake_files: IntCounter,
    /// Bytes of published lake files.
    pub lake_bytes: IntCounter,
    /// Partitions currently assigned to this process.
    pub assigned_partitions: IntGauge,
    /// Dead letters given up on after their DLQ publish attempts (kept in Postgres).
    pub dlq_unpublished: IntCounter,
    /// The event types the contracts know: the only `event_type` label values.
    known_event_types: OnceLock<BTreeSet<String>>,
}

fn buckets() -> Vec<f64> {
    vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["sink"])
                .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let lateness_seconds = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "eventline_event_lateness_seconds",
                "Arrival (Kafka timestamp, else receive time) minus the event's own time, accepted events",
            )
            .buckets(vec![0.1, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(lateness_seconds.clone())).expect("unique metric");
        let assigned =
            IntGauge::new("eventline_assigned_partitions", "Partitions assigned to this process")
                .expect("valid metric");
        registry.register(Box::new(assigned.clone())).expect("unique metric");
        Metrics {
            consumed: counter("eventline_records_consumed_total", "Records read from Kafka"),
            outcomes: counter_vec("eventline_outcomes_total", "Record outcomes", &["outcome", "event_type", "error_class"]),
            late_events: counter_vec("eventline_late_events_total", "Accepted events later than pipeline.late_after_s", &["event_type"]),
            lateness_seconds,
            stage_failures: counter_vec("eventline_stage_failures_total", "Panics caught in a stage (the stage goes on)", &["stage"]),
            batch_size: histogram("eventline_sink_batch_records", "Records per batch written", vec![1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0]),
            write_seconds: histogram("eventline_sink_write_seconds", "Time per sink write call", buckets()),
            end_to_end_seconds: histogram("eventline_end_to_end_latency_seconds", "Kafka timestamp to durably stored", buckets()),
            consumer_lag: gauge_vec("eventline_consumer_lag_records", "High watermark minus committed offset", &["partition"]),
            committed_offset: gauge_vec("eventline_committed_offset", "Offset committed to Kafka", &["partition"]),
            sink_progress: gauge_vec("eventline_sink_progress_offset", "Next offset the sink has not stored", &["sink", "partition"]),
            queue_depth: gauge_vec("eventline_sink_queue_batches", "Batches held by the sink supervisor", &["sink"]),
            queue_bytes: gauge_vec("eventline_sink_queue_bytes", "Approximate bytes of batches held by the sink supervisor (bounded by pipeline.sink_queue_bytes)", &["sink"]),
            sink_restarts: counter_vec("eventline_sink_restarts_total", "Writer restarts", &["sink"]),
            sink_fenced: counter_vec("eventline_sink_fenced_total", "Partitions a writer found moved on by another process (dropped and re-sent, no restart)", &["sink"]),
            sink_up: gauge_vec("eventline_sink_up", "1 when the writer is up", &["sink"]),
            lake_files: counter("eventline_lake_files_written_total", "Published lake files"),
            lake_bytes: counter("eventline_lake_bytes_written_total", "Bytes of published lake files"),
            assigned_partitions: assigned,
            dlq_unpublished: counter("eventline_dlq_unpublished_total", "Dead letters not published to the DLQ topic after their attempts (their dead_letters rows keep them)"),
            known_event_types: OnceLock::new(),
            registry,
        }
    }

    /// The event types the contracts know, set once at start.
    pub fn know_event_types(&self, types: impl IntoIterator<Item = String>) {
        let _ = self.known_event_types.set(types.into_iter().collect());
    }

    /// An `event_type` label value: the type when the contracts know it, else `unknown`,
    /// so that a stream of made-up types cannot grow the metrics without bound.
    pub fn event_type_label<'a>(&self, event_type: &'a str) -> &'a str {
        match self.known_event_types.get() {
            Some(known) if !known.contains(event_type) => "unknown",
            _ => event_type,
        }
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub fn metrics() -> Arc<Metrics> {
    static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
    METRICS.get_or_init(|| Arc::new(Metrics::new())).clone()
}

/// A parsed scrape of `/metrics` (the text format, read by `prometheus-parse`), for
/// `eventline status` and the tests. Labels are matched by name and exact value.
#[derive(Debug, Clone, Default)]
pub struct Scrape(Vec<prometheus_parse::Sample>);

impl Scrape {
    /// Parses Prometheus text; lines it cannot read are an error.
    pub fn parse(text: &str) -> std::io::Result<Scrape> {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        Ok(Scrape(prometheus_parse::Scrape::parse(lines)?.samples))
    }

    fn value(sample: &prometheus_parse::Sample) -> Option<f64> {
        use prometheus_parse::Value::*;
        match sample.value {
            Counter(v) | Gauge(v) | Untyped(v) => Some(v),
            Histogram(_) | Summary(_) => None,
        }
    }

    /// The samples of `metric` whose labels include every `(name, value)` of `filter`.
    fn matching<'a>(
        &'a self,
        metric: &'a str,
        filter: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
        self.0.iter().filter(move |s| {
            s.metric == metric && filter.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// Sum of every series of `metric` whose labels match `filter`.
    pub fn sum(&self, metric: &str, filter: &[(&str, &str)]) -> f64 {
        self.matching(metric, filter).filter_map(Scrape::value).sum()
    }

    /// How many series `metric` has.
    pub fn count(&self, metric: &str) -> usize {
        self.matching(metric, &[]).count()
    }

    /// `label value -> value` for one metric.
    pub fn by_label(&self, metric: &str, key: &str) -> BTreeMap<String, f64> {
        self.by_label_where(metric, key, &[])
    }

    /// `label value -> value` for the series of `metric` that match `filter`.
    pub fn by_label_where(
        &self,
        metric: &str,
        key: &str,
        filter: &[(&str, &str)],
    ) -> BTreeMap<String, f64> {
        self.matching(metric, filter)
            .filter_map(|s| Some((s.labels.get(key)?.to_string(), Scrape::value(s)?)))
            .collect()
    }

    /// Every series name a query can use (a histogram's `_bucket` included).
    pub fn names(&self) -> BTreeSet<String> {
        let bucket = |s: &prometheus_parse::Sample| match s.value {
            prometheus_parse::Value::Histogram(_) => Some(format!("{}_bucket", s.metric)),
            _ => None,
        };
        self.0.iter().flat_map(|s| [Some(s.metric.clone()), bucket(s)]).flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_parse_back_with_their_labels() {
        let m = metrics();
        m.outcomes.with_label_values(&["accepted", "account_created", ""]).inc_by(3);
        m.outcomes.with_label_values(&["accepted", "contact_created", ""]).inc_by(2);
        m.outcomes.with_label_values(&["dead_letter", "account_created", "type"]).inc();
        m.write_seconds.with_label_values(&["postgres"]).observe(0.01);
        let scrape = Scrape::parse(&m.render()).unwrap();
        let by_type = [("outcome", "accepted"), ("event_type", "account_created")];
        assert!(scrape.sum("eventline_outcomes_total", &by_type) >= 3.0);
        // `type` is a label name of its own, not a part of `event_type`.
        assert_eq!(scrape.sum("eventline_outcomes_total", &[("type", "account_created")]), 0.0);
        let accepted = scrape.by_label("eventline_outcomes_total", "outcome");
        assert!(accepted.contains_key("accepted"));
        assert!(scrape.names().contains("eventline_sink_write_seconds_bucket"));
    }
}
