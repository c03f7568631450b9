//! Writing to the terminal without panicking when the reader goes away.
//!
//! Rust's `print!` family panics when the other end of a pipe is closed
//! (`eventline produce ... | head -1`). Two rules instead:
//! - output that *is* the command's result (`config`, `supervision`, `status`, a drill's
//!   report) goes through [`out`], which returns the error; the binary turns a closed pipe
//!   into a quiet exit 0, as `yes | head` does;
//! - progress and diagnostics on stderr (the producer's progress and summary, rejected
//!   lines, drill steps) go through [`note`], which drops what cannot be written: a reader
//!   that stopped listening must not stop the work (every record is still sent).

use std::io::{self, Write};

/// Writes `text` to stdout and flushes it, so a closed pipe is seen at once.
pub fn out(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes `text` and a newline to stderr; a closed or full stderr is ignored.
pub fn note(text: &str) {
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes()).and_then(|_| stderr.write_all(b"\n"));
}

/// True when the error (or anything it wraps) is a closed output pipe.
pub fn is_closed_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe) {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("printing the report")]
    struct Wrapper(#[source] io::Error);

    #[test]
    fn a_closed_pipe_is_found_under_wrapping_errors() {
        let wrapped = Wrapper(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_closed_pipe(&wrapped));
        let other = Wrapper(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!is_closed_pipe(&other));
    }
}
