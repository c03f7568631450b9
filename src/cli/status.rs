//! `eventline status`: a compact view of a running processor, read from its admin
//! endpoint: state per sink, lag per partition, rates, last restarts.

use crate::cli::console::out;
use crate::telemetry::metrics::Scrape;
use crate::telemetry::supervision_log::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// One scrape of the admin endpoint.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// Parsed `/metrics`.
    pub series: Scrape,
    /// `/ready` answered 200.
    pub ready: bool,
    /// Recent supervision entries.
    pub supervision: Vec<Entry>,
}

/// Why the processor could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The admin endpoint did not answer.
    #[error("GET {url}: {source} (is the processor running? admin.listen)")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Cause.
        #[source]
        source: Box<ureq::Error>,
    },
    /// `/metrics` was not in the Prometheus text format.
    #[error("reading /metrics: {0}")]
    BadMetrics(String),
    /// Standard output failed (a closed pipe ends the command quietly).
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
}

fn get(url: &str, token: Option<&str>) -> Result<(u16, String), StatusError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let unreachable = |e| StatusError::Unreachable { url: url.to_string(), source: Box::new(e) };
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().map_err(unreachable)?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(unreachable)?;
    Ok((status, body))
}

/// Scrapes `base` (e.g. `http://127.0.0.1:9898`), with `admin.token` when one is set.
pub fn sample(base: &str, token: Option<&str>) -> Result<Sample, StatusError> {
    let (_, metrics) = get(&format!("{base}/metrics"), token)?;
    let (ready, _) = get(&format!("{base}/ready"), token)?;
    let (_, supervision) = get(&format!("{base}/supervision"), token)?;
    Ok(Sample {
        at: Instant::now(),
        series: Scrape::parse(&metrics).map_err(|e| StatusError::BadMetrics(e.to_string()))?,
        ready: ready == 200,
        supervision: serde_json::from_str(&supervision).unwrap_or_default(),
    })
}

impl Sample {
    /// Sum of every series of `metric` whose labels match `filter`.
    pub fn sum(&self, metric: &str, filter: &[(&str, &str)]) -> f64 {
        self.series.sum(metric, filter)
    }

    /// `label value -> value` for one metric.
    pub fn by_label(&self, metric: &str, key: &str) -> BTreeMap<String, f64> {
        self.series.by_label(metric, key)
    }
}

/// Renders the view from the newest sample and the oldest one kept (for rates).
pub fn render(base: &str, oldest: &Sample, newest: &Sample) -> String {
    let secs = newest.at.duration_since(oldest.at).as_secs_f64().max(1e-3);
    let rate = |metric: &str, filter: &[(&str, &str)]| {
        (newest.sum(metric, filter) - oldest.sum(metric, filter)) / secs
    };
    let mut out = format!(
        "eventline at {base}   ready: {}   assigned partitions: {}\n\n",
        if newest.ready { "yes" } else { "NO" },
        newest.sum("eventline_assigned_partitions", &[]) as u64
    );
    out.push_str(&format!(
        "{:<10} {:<11} {:>9} {:>8}  {}\n",
        "sink", "state", "restarts", "queued", "progress (next offset per partition)"
    ));
    for sink in ["postgres", "lake"] {
        let up = newest.sum("eventline_sink_up", &[("sink", sink)]) > 0.0;
        let progress: Vec<String> = newest
            .series
            .by_label_where("eventline_sink_progress_offset", "partition", &[("sink", sink)])
            .into_iter()
            .map(|(p, v)| format!("p{p}={v}"))
            .collect();
        out.push_str(&format!(
            "{:<10} {:<11} {:>9} {:>8}  {}\n",
            sink,
            if up { "up" } else { "restarting" },
            newest.sum("eventline_sink_restarts_total", &[("sink", sink)]) as u64,
            newest.sum("eventline_sink_queue_batches", &[("sink", sink)]) as u64,
            progress.join(" ")
        ));
    }
    out.push_str(&format!("\n{:<10} {:>12} {:>10}\n", "partition", "committed", "lag"));
    let committed = newest.by_label("eventline_committed_offset", "partition");
    for (p, lag) in newest.by_label("eventline_consumer_lag_records", "partition") {
        out.push_str(&format!(
            "{:<10} {:>12} {:>10}\n",
            p,
            committed.get(&p).map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            lag
        ));
    }
    out.push_str(&format!(
        "\nrates over the last {:.0}s: consumed {:.0}/s, accepted {:.0}/s, duplicate {:.0}/s, conflict {:.0}/s, dead_letter {:.0}/s\n",
        secs,
        rate("eventline_records_consumed_total", &[]),
        rate("eventline_outcomes_total", &[("outcome", "accepted")]),
        rate("eventline_outcomes_total", &[("outcome", "duplicate")]),
        rate("eventline_outcomes_total", &[("outcome", "conflict")]),
        rate("eventline_outcomes_total", &[("outcome", "dead_letter")]),
    ));
    out.push_str(&format!(
        "since start: accepted {}, late {} (later than pipeline.late_after_s)\n",
        newest.sum("eventline_outcomes_total", &[("outcome", "accepted")]) as u64,
        newest.sum("eventline_late_events_total", &[]) as u64,
    ));
    let restarts: Vec<&Entry> = newest
        .supervision
        .iter()
        .filter(|e| {
            e.kind != crate::telemetry::supervision_log::EntryKind::Start
                && e.kind != crate::telemetry::supervision_log::EntryKind::Stop
        })
        .collect();
    out.push_str("\nlast restarts:\n");
    if restarts.is_empty() {
        out.push_str("  none\n");
    }
    for e in restarts.iter().rev().take(5).rev() {
        out.push_str(&format!(
            "  {} {} {:?} {}\n",
            e.at.format("%H:%M:%S%.3f"),
            e.actor,
            e.kind,
            e.cause.as_deref().unwrap_or("")
        ));
    }
    out
}
/// Prints the view once (after one second, so rates have two samples), or with `watch`
/// redraws it every two seconds with rates over the last minute, until the reader goes
/// away.
pub fn show(base: &str, token: Option<&str>, watch: bool) -> Result<(), StatusError> {
    let mut window = VecDeque::from([sample(base, token)?]);
    loop {
        let pause = if watch && window.len() > 1 { 2 } else { 1 };
        std::thread::sleep(Duration::from_secs(pause));
        let newest = sample(base, token)?;
        while window.len() > 1 && newest.at.duration_since(window[0].at) > Duration::from_secs(60) {
            window.pop_front();
        }
        let view = render(base, &window[0], &newest);
        window.push_back(newest);
        if !watch {
            return out(&view).map_err(StatusError::Output);
        }
        out(&format!("\x1b[2J\x1b[H{view}")).map_err(StatusError::Output)?;
    }
}
