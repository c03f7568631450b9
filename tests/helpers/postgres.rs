//! Postgres for the tests: the test's database, outcome counts, stored event ids and
//! progress, and a private cluster an outage test may stop or crash.

use super::*;

impl TestEnv {
    /// A connection to this test's database.
    pub fn pg(&self) -> PgConnection {
        PgConnection::establish(&self.db_url).expect("connect to the test database")
    }

    /// Runs a `SELECT count(*) AS n ...`-style query returning one bigint named `n`.
    pub fn count(&self, sql: &str) -> i64 {
        diesel::sql_query(sql).get_result::<Count>(&mut self.pg()).map(|c| c.n).unwrap_or(-1)
    }

    /// Outcome counts per outcome, summed over partitions.
    pub fn outcomes(&self) -> HashMap<String, i64> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            outcome: String,
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        diesel::sql_query(
            "SELECT outcome, sum(count)::bigint AS n FROM outcome_counts GROUP BY outcome",
        )
        .load::<Row>(&mut self.pg())
        .map(|rows| rows.into_iter().map(|r| (r.outcome, r.n)).collect())
        .unwrap_or_default()
    }

    /// Every event id in Postgres's `events`.
    pub fn event_ids_pg(&self) -> Vec<String> {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
        }
        diesel::sql_query("SELECT event_id::text AS id FROM events")
            .load::<Id>(&mut self.pg())
            .expect("events read")
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    /// Sum of all outcomes: records the Postgres sink has accounted for.
    pub fn outcomes_total(&self) -> i64 {
        self.outcomes().values().sum()
    }

    /// Points the processor and the assertions at another database.
    pub fn use_database(&mut self, url: &str) {
        self.db_url = url.to_string();
    }

    /// Postgres's durable progress on a partition (`sink_progress`).
    pub fn sink_progress_pg(&self, partition: i32) -> Option<i64> {
        eventline::db::read_progress(&mut self.pg(), "postgres", &self.topic, partition)
            .expect("sink_progress reads")
    }

    /// Postgres's `events`: event id -> `is_valid`.
    pub fn pg_events(&self) -> std::collections::BTreeMap<String, bool> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
            #[diesel(sql_type = diesel::sql_types::Bool)]
            is_valid: bool,
        }
        diesel::sql_query("SELECT event_id::text AS id, is_valid FROM events")
            .load::<Row>(&mut self.pg())
            .expect("read events")
            .into_iter()
            .map(|r| (r.id, r.is_valid))
            .collect()
    }
}

#[derive(QueryableByName)]
pub(super) struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A PostgreSQL cluster of the test's own, so an outage test can stop it without
/// disturbing the tests that share the stack's server.
pub struct PrivatePostgres {
    /// Its URL (database `eventline`).
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
}

pub(super) const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub(super) fn as_postgres_user(program: &str, args: &[&str]) -> std::process::Output {
    let is_root =
        Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let mut command = if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    };
    command.args(args).output().expect("postgres binaries run")
}

impl PrivatePostgres {
    /// initdb + start on a free port.
    pub fn start() -> PrivatePostgres {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::Builder::new().prefix("eventline-pg-").tempdir_in("/tmp").unwrap();
        let _ =
            Command::new("chown").args(["postgres:", &dir.path().display().to_string()]).status();
        let data = dir.path().join("data").display().to_string();
        let out = as_postgres_user(
            &format!("{PG_BIN}/initdb"),
            &["-D", &data, "-U", "eventline", "--auth=trust", "-E", "UTF8"],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let pg = PrivatePostgres {
            url: format!("postgres://eventline@127.0.0.1:{port}/eventline"),
            port,
            dir,
        };
        pg.start_again();
        let mut admin =
            PgConnection::establish(&format!("postgres://eventline@127.0.0.1:{port}/postgres"))
                .unwrap();
        diesel::sql_query("CREATE DATABASE eventline").execute(&mut admin).unwrap();
        pg
    }

    /// Starts the stopped server and waits until it accepts connections.
    pub fn start_again(&self) {
        let data = self.dir.path().join("data").display().to_string();
        let log = self.dir.path().join("postgres.log").display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let out = as_postgres_user(
            &format!("{PG_BIN}/pg_ctl"),
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Shell commands that stop (like a crash) and start this server, for drills.
    pub fn stop_and_start_commands(&self) -> (String, String) {
        let data = self.dir.path().join("data").display().to_string();
        let log = self.dir.path().join("postgres.log").display().to_string();
        let prefix =
            if Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false) {
                "runuser -u postgres -- "
            } else {
                ""
            };
        (
            format!("{prefix}{PG_BIN}/pg_ctl -D {data} -m immediate -w stop"),
            format!("{prefix}{PG_BIN}/pg_ctl -D {data} -l {log} -o '-p {} -c listen_addresses=127.0.0.1 -k {}' -w start", self.port, self.dir.path().display()),
        )
    }

    /// Stops the server the hard way (like a crash: WAL recovery at the next start).
    pub fn crash(&self) {
        let data = self.dir.path().join("data").display().to_string();
        let out = as_postgres_user(
            &format!("{PG_BIN}/pg_ctl"),
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = as_postgres_user(
            &format!("{PG_BIN}/pg_ctl"),
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        );
    }
}
