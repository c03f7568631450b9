//! `eventline status`: a compact view of a running processor, read from its admin
//! endpoint: state per sink, lag per partition, rates, last restarts.

use crate::metrics::{label, parse_text, sum_series};
use crate::supervision_log::Entry;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One scrape of the admin endpoint.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// Parsed `/metrics`.
    pub series: Vec<(String, f64)>,
    /// `/ready` answered 200.
    pub ready: bool,
    /// Recent supervision entries.
    pub supervision: Vec<Entry>,
}

fn get(url: &str) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(|e| format!("reading {url}: {e}"))?;
    Ok((status, body))
}

/// Scrapes `base` (e.g. `http://127.0.0.1:9898`).
pub fn sample(base: &str) -> Result<Sample, String> {
    let (_, metrics) = get(&format!("{base}/metrics"))?;
    let (ready, _) = get(&format!("{base}/ready"))?;
    let (_, supervision) = get(&format!("{base}/supervision"))?;
    Ok(Sample {
        at: Instant::now(),
        series: parse_text(&metrics),
        ready: ready == 200,
        supervision: serde_json::from_str(&supervision).unwrap_or_default(),
    })
}

impl Sample {
    /// Sum of every series of `metric` whose labels match `filter`.
    pub fn sum(&self, metric: &str, filter: &[(&str, &str)]) -> f64 {
        sum_series(&self.series, metric, filter)
    }

    /// `label value -> value` for one metric.
    pub fn by_label(&self, metric: &str, key: &str) -> BTreeMap<String, f64> {
        self.series
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("{metric}{{")))
            .filter_map(|(s, v)| label(s, key).map(|l| (l.to_string(), *v)))
            .collect()
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
            .iter()
            .filter(|(s, _)| {
                s.starts_with("eventline_sink_progress_offset{") && label(s, "sink") == Some(sink)
            })
            .map(|(s, v)| format!("p{}={v}", label(s, "partition").unwrap_or("?")))
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
    let restarts: Vec<&Entry> = newest
        .supervision
        .iter()
        .filter(|e| {
            e.kind != crate::supervision_log::EntryKind::Start
                && e.kind != crate::supervision_log::EntryKind::Stop
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
