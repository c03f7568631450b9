//! A processor the drill starts as a child: the same binary running `eventline run`,
//! inheriting the settings environment, plus fault hooks when the drill asks.

use super::StepError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running child processor.
pub struct ChildProcessor {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl ChildProcessor {
    /// Starts `eventline run` with `extra` environment variables, logging to `log`.
    pub fn start(extra: &[(&str, &str)], log: &Path) -> Result<ChildProcessor, StepError> {
        let exe = std::env::current_exe().map_err(StepError::io("own executable"))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(StepError::io(log.display().to_string()))?;
        let mut command = Command::new(exe);
        command.arg("run").stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().map_err(StepError::io("starting the processor"))?;
        Ok(ChildProcessor { child, log: log.to_path_buf() })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait (up to `timeout`) for the exit code.
    pub fn stop(mut self, timeout: Duration) -> Result<i32, StepError> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) =
                self.child.try_wait().map_err(StepError::io("waiting for the processor"))?
            {
                return Ok(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(StepError::Failed(format!(
                    "processor did not exit within {timeout:?} of SIGTERM"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9 and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildProcessor {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every 100 ms until true or `timeout`; the error names `what`.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool, StepError>,
) -> Result<(), StepError> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(StepError::Failed(format!(
                "timed out after {timeout:?} waiting until {what}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
