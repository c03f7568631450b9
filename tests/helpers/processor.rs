//! The processor under test: the real `eventline` binary started with the test's
//! settings, its log, admin server, signals and exit, and the CLI's other commands.

use super::*;

impl TestEnv {
    /// The environment that points the processor at this test's slice.
    pub fn processor_env(&self) -> Vec<(String, String)> {
        [
            ("EVENTLINE_ENV", "local".to_string()),
            ("EVENTLINE_SETTINGS_DIR", repo().join("settings").display().to_string()),
            ("EVENTLINE__KAFKA__BROKERS", self.brokers.clone()),
            ("EVENTLINE__KAFKA__TOPIC", self.topic.clone()),
            ("EVENTLINE__KAFKA__DLQ_TOPIC", self.dlq_topic.clone()),
            ("EVENTLINE__KAFKA__GROUP_ID", self.group.clone()),
            ("EVENTLINE__KAFKA__SESSION_TIMEOUT_MS", "6000".to_string()),
            ("EVENTLINE__POSTGRES__URL", self.db_url.clone()),
            ("EVENTLINE__LAKE__ROOT", self.lake.display().to_string()),
            ("EVENTLINE__LAKE__MAX_FILE_AGE_MS", "500".to_string()),
            ("EVENTLINE__PIPELINE__CONTRACTS_DIR", repo().join("contracts").display().to_string()),
            ("EVENTLINE__PIPELINE__SUMMARY_INTERVAL_S", "2".to_string()),
            ("EVENTLINE__SUPERVISION__LOG_PATH", self.supervision_log.display().to_string()),
            ("EVENTLINE__ADMIN__LISTEN", "127.0.0.1:0".to_string()),
            ("RUST_LOG", std::env::var("EVENTLINE_TEST_RUST_LOG").unwrap_or("info".into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Produces `records` to a topic of `partitions` partitions, runs a processor until
    /// both sinks hold the `accepted` events, and stops it (exit 0).
    pub fn store_all(&mut self, partitions: i32, records: &[TestRecord], accepted: usize) {
        self.produce(records);
        let p = self.start_processor(&[]);
        self.wait_drained(partitions, Duration::from_secs(60));
        wait_until("the lake holds every accepted event", Duration::from_secs(30), || {
            self.lake_rows() == accepted as i64
        });
        assert_eq!(self.stop_processor(p), 0);
    }

    /// Starts the real binary with this test's settings plus `extra` variables.
    pub fn start_processor(&mut self, extra: &[(&str, &str)]) -> usize {
        self.start_processor_in(&repo(), extra)
    }

    /// Starts the real binary in its own working folder `dir`, as on a host of its own:
    /// its supervision log is there too (the settings and contracts paths are absolute).
    pub fn start_processor_in(&mut self, dir: &Path, extra: &[(&str, &str)]) -> usize {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("processor-{}.log", self.processors.len())))
            .expect("processor log");
        let mut command = Command::new(binary());
        command.arg("run").current_dir(dir).stdout(Stdio::null()).stderr(log);
        for (k, v) in self.processor_env() {
            command.env(k, v);
        }
        if dir != repo() {
            let own_log = dir.join("supervision.jsonl").display().to_string();
            command.env("EVENTLINE__SUPERVISION__LOG_PATH", own_log);
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        self.processors.push(command.spawn().expect("start eventline"));
        self.processors.len() - 1
    }

    /// The processor's log so far (for assertion messages).
    pub fn processor_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("processor-{index}.log")))
            .unwrap_or_default()
    }

    /// How many write calls a processor's `sink` writer (`postgres` or `lake`) has
    /// completed (from its metrics; 0 until its admin server answers).
    pub fn sink_writes(&self, index: usize, sink: &str) -> u64 {
        if !self.processor_log(index).contains("Admin server listening") {
            return 0;
        }
        let (_, metrics) = admin_get(&format!("{}/metrics", self.admin_url(index)));
        let prefix = format!("eventline_sink_write_seconds_count{{sink=\"{sink}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// The admin server's base URL, read from the processor's start-up log line.
    pub fn admin_url(&self, index: usize) -> String {
        let mut url = String::new();
        wait_until("the admin server is listening", Duration::from_secs(30), || {
            let log = self.processor_log(index);
            if let Some(rest) = log.split("Admin server listening on ").nth(1) {
                url = rest.split_whitespace().next().unwrap_or_default().to_string();
            }
            !url.is_empty()
        });
        url
    }

    /// SIGTERM, then waits for the exit code.
    pub fn stop_processor(&mut self, index: usize) -> i32 {
        let child = &mut self.processors[index];
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "processor did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit code of a processor that must stop by itself within `timeout`.
    pub fn exit_code_within(&mut self, index: usize, timeout: Duration) -> i32 {
        let child = &mut self.processors[index];
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "processor still running after {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The operating system's process id of a processor.
    pub fn processor_pid(&self, index: usize) -> u32 {
        self.processors[index].id()
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to a processor.
    pub fn signal_processor(&self, index: usize, signal: &str) {
        let pid = self.processors[index].id().to_string();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// kill -9.
    pub fn kill_processor(&mut self, index: usize) {
        let child = &mut self.processors[index];
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The supervision log's failures, restarts and give-ups, as `actor kind: cause`.
    pub fn supervision_failures(&self) -> Vec<String> {
        use eventline::telemetry::supervision_log::{read_entries, EntryKind};
        read_entries(&self.supervision_log)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                matches!(e.kind, EntryKind::Failure | EntryKind::Restart | EntryKind::GiveUp)
            })
            .map(|e| format!("{} {:?}: {}", e.actor, e.kind, e.cause.unwrap_or_default()))
            .collect()
    }

    /// Whether a processor has exited (without waiting).
    pub fn processor_exited(&mut self, index: usize) -> bool {
        self.processors[index].try_wait().expect("wait").is_some()
    }

    /// Takes a [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        let tables = ["events", "processed_events", "dead_letters", "conflicts"]
            .iter()
            .map(|t| (t.to_string(), self.count(&format!("SELECT count(*) AS n FROM {t}"))))
            .collect();
        let lake_ids = duckdb(&format!(
            "SELECT md5(string_agg(event_id, ',' ORDER BY event_id)) FROM read_parquet('{}/event_type=*/*/*/*/*.parquet', hive_partitioning=true)",
            self.lake.display()
        ));
        #[derive(QueryableByName)]
        struct Hash {
            #[diesel(sql_type = diesel::sql_types::Text)]
            h: String,
        }
        let pg_ids = diesel::sql_query(
            "SELECT md5(string_agg(event_id::text, ',' ORDER BY event_id::text)) AS h FROM events",
        )
        .get_result::<Hash>(&mut self.pg())
        .map(|h| h.h)
        .unwrap_or_default();
        Snapshot {
            tables,
            outcomes: self.outcomes().into_iter().collect(),
            lake: self.lake_counts_duckdb(),
            lake_ids_hash: lake_ids.trim().to_string(),
            pg_ids_hash: pg_ids,
        }
    }

    /// Waits until the processor has consumed, stored and committed everything produced.
    pub fn wait_drained(&self, partitions: i32, timeout: Duration) {
        let end = self.high_watermarks(partitions);
        let total: i64 = end.iter().sum();
        wait_until("every record is accounted for in Postgres", timeout, || {
            self.outcomes_total() == total
        });
        wait_until("offsets are committed to the end", timeout, || {
            self.committed(partitions) == end
        });
    }

    /// Runs `eventline ARGS` with this test's settings; returns (exit code, stderr).
    pub fn eventline(&self, args: &[&str]) -> (i32, String) {
        let (code, _, stderr) = self.eventline_output(args);
        (code, stderr)
    }

    /// Runs `eventline ARGS` with this test's settings; returns (exit code, stdout, stderr).
    pub fn eventline_output(&self, args: &[&str]) -> (i32, String, String) {
        self.eventline_with(args, &[])
    }

    /// Runs `eventline ARGS` with this test's settings plus `extra` variables; returns
    /// (exit code, stdout, stderr).
    pub fn eventline_with(&self, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
        let mut command = Command::new(binary());
        command.args(args).current_dir(repo());
        for (k, v) in self.processor_env() {
            command.env(k, v);
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        let out = command.output().expect("eventline runs");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }
}

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A point-in-time picture of both sinks, to compare before and after a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Row counts per table.
    pub tables: Vec<(String, i64)>,
    /// Outcome counts.
    pub outcomes: std::collections::BTreeMap<String, i64>,
    /// Lake rows and distinct event ids.
    pub lake: (i64, i64),
    /// A hash of the sorted event ids in the lake.
    pub lake_ids_hash: String,
    /// A hash of the sorted event ids in Postgres.
    pub pg_ids_hash: String,
}

/// GET `url` on a processor's admin endpoint: (status, body). Any status is an answer.
pub fn admin_get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(url).call().expect("admin endpoint answers");
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().expect("a text body"))
}
