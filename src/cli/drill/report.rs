//! A drill's report: the figures before and after, and PASS or FAIL per check. Printed
//! as text or JSON and saved as markdown under the reports folder.

use serde::Serialize;
use std::path::{Path, PathBuf};

/// One figure, before and after.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What it measures.
    pub name: String,
    /// Value before the drill.
    pub before: String,
    /// Value after.
    pub after: String,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The property checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The numbers behind the verdict.
    pub detail: String,
}

/// A drill's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Drill name.
    pub drill: String,
    /// Start time (UTC, RFC 3339).
    pub started_at: String,
    /// Wall time in seconds.
    pub duration_s: f64,
    /// True when every check passed.
    pub passed: bool,
    /// Figures before and after.
    pub figures: Vec<Figure>,
    /// Checks.
    pub checks: Vec<Check>,
    /// What was done, in order.
    pub steps: Vec<String>,
}

impl Report {
    /// An empty report for `drill`.
    pub fn new(drill: &str) -> Report {
        Report {
            drill: drill.into(),
            started_at: chrono::Utc::now().to_rfc3339(),
            duration_s: 0.0,
            passed: true,
            figures: Vec::new(),
            checks: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// Records a step (also printed as progress).
    pub fn step(&mut self, text: impl Into<String>) {
        let text = text.into();
        crate::cli::console::note(&format!("drill {}: {text}", self.drill));
        self.steps.push(text);
    }

    /// Adds a figure.
    pub fn figure(&mut self, name: &str, before: impl ToString, after: impl ToString) {
        self.figures.push(Figure {
            name: name.into(),
            before: before.to_string(),
            after: after.to_string(),
        });
    }

    /// Adds a check.
    pub fn check(&mut self, name: &str, passed: bool, detail: impl Into<String>) {
        self.passed &= passed;
        self.checks.push(Check { name: name.into(), passed, detail: detail.into() });
    }

    /// Plain text for the terminal.
    pub fn text(&self) -> String {
        let width = self.figures.iter().map(|f| f.name.len()).max().unwrap_or(6).max(6);
        let mut out = format!("eventline drill {} ({:.1}s)\n\n", self.drill, self.duration_s);
        if !self.figures.is_empty() {
            out.push_str(&format!("{:<width$}  {:>20}  {:>20}\n", "figure", "before", "after"));
            for f in &self.figures {
                out.push_str(&format!("{:<width$}  {:>20}  {:>20}\n", f.name, f.before, f.after));
            }
            out.push('\n');
        }
        for c in &self.checks {
            out.push_str(&format!(
                "{}  {}: {}\n",
                if c.passed { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            ));
        }
        out.push_str(&format!("\nverdict: {}\n", if self.passed { "PASS" } else { "FAIL" }));
        out
    }

    /// Markdown for the reports folder.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# eventline drill `{}`: {}\n\nStarted {}, took {:.1} s.\n\n",
            self.drill,
            if self.passed { "PASS" } else { "FAIL" },
            self.started_at,
            self.duration_s
        );
        out.push_str("## Steps\n\n");
        for s in &self.steps {
            out.push_str(&format!("1. {s}\n"));
        }
        if !self.figures.is_empty() {
            out.push_str("\n## Figures\n\n| figure | before | after |\n| --- | ---: | ---: |\n");
            for f in &self.figures {
                out.push_str(&format!("| {} | {} | {} |\n", f.name, f.before, f.after));
            }
        }
        out.push_str("\n## Checks\n\n| verdict | check | detail |\n| --- | --- | --- |\n");
        for c in &self.checks {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                if c.passed { "PASS" } else { "FAIL" },
                c.name,
                c.detail.replace('|', "\\|")
            ));
        }
        out
    }

    /// Writes the markdown report into `dir`; returns its path.
    pub fn save(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let path = dir.join(format!("drill-{}-{stamp}.md", self.drill));
        std::fs::write(&path, crate::settings::secrets::scrub(&self.markdown()))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failed_check_fails_the_report_and_every_format_shows_the_numbers() {
        let mut r = Report::new("verify");
        r.figure("events in postgres", 10, 12);
        r.check("nothing added", true, "10 = 10");
        r.check("no duplicate", false, "2 ids twice");
        assert!(!r.passed);
        assert!(
            r.text().contains("FAIL  no duplicate: 2 ids twice")
                && r.text().contains("verdict: FAIL")
        );
        assert!(r.markdown().contains("| events in postgres | 10 | 12 |"));
        let dir = tempfile::tempdir().unwrap();
        let path = r.save(dir.path()).unwrap();
        assert!(std::fs::read_to_string(path)
            .unwrap()
            .contains("# eventline drill `verify`: FAIL"));
    }
}
