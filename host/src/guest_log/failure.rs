//! A guest's failure, said once: the panic message (from the guest's stderr)
//! or the trap's cause, what else the guest wrote to stderr in that event,
//! and the wasm backtrace — for one log line, or one refusal message.

use std::fmt;

/// Why a guest call trapped.
#[derive(Clone, Debug)]
pub struct GuestFailure {
    /// The panic (`panicked at src/lib.rs:5:9: boom`) or, without one, the
    /// trap's cause (`wasm trap: ...`, `event exceeded its CPU time limit`).
    pub summary: String,
    /// The other lines the guest wrote to stderr during the call.
    pub stderr: Vec<String>,
    /// The wasm backtrace, when wasmtime recorded one (one frame a line).
    pub backtrace: Option<String>,
}

impl GuestFailure {
    /// The failure `error` of a guest call, during which the guest wrote
    /// `stderr` (see [`super::GuestStderr::take`]).
    pub fn new(error: &wasmtime::Error, stderr: Vec<String>) -> GuestFailure {
        let (panic, stderr) = split_panic(stderr);
        let cause = error.root_cause().to_string();
        let summary = match panic {
            // A Rust panic ends in `unreachable`: the panic says it all.
            Some(p) if cause.contains("unreachable") => p,
            Some(p) => format!("{p} ({cause})"),
            None => cause,
        };
        let backtrace = error.downcast_ref::<wasmtime::WasmBacktrace>().map(|bt| {
            let text = bt.to_string();
            text.split_once('\n')
                .map(|(_, frames)| frames.to_string())
                .unwrap_or(text)
        });
        GuestFailure {
            summary,
            stderr,
            backtrace,
        }
    }

    /// The lines after the summary: the guest's other stderr lines and the
    /// backtrace, each line indented, each starting with a newline (empty when
    /// there are none).
    pub fn details(&self) -> String {
        let mut out = String::new();
        if !self.stderr.is_empty() {
            out.push_str("\n  guest stderr:");
            for line in &self.stderr {
                out.push_str("\n    ");
                out.push_str(line);
            }
        }
        if let Some(bt) = &self.backtrace {
            out.push_str("\n  wasm backtrace:");
            for line in bt.lines() {
                out.push_str("\n  ");
                out.push_str(line);
            }
        }
        out
    }
}

/// The summary alone (one line): what a refusal message says.
impl fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for GuestFailure {}

/// Finds a Rust panic in stderr lines — `thread '...' panicked at FILE:L:C:`,
/// the message's lines, then std's `note: run with RUST_BACKTRACE` hint —
/// and returns it as `panicked at FILE:L:C: message`, with the other lines.
/// The hint is dropped: the host logs the wasm backtrace itself.
fn split_panic(lines: Vec<String>) -> (Option<String>, Vec<String>) {
    let Some(at) = lines.iter().position(|l| l.contains(" panicked at ")) else {
        return (None, lines);
    };
    let mut rest = Vec::new();
    let mut message = Vec::new();
    let mut location = String::new();
    for (i, line) in lines.into_iter().enumerate() {
        if i < at {
            rest.push(line);
        } else if i == at {
            location = line
                .split_once(" panicked at ")
                .map(|(_, l)| l.trim_end_matches(':').to_string())
                .unwrap_or_default();
        } else if line.starts_with("note: run with `RUST_BACKTRACE") {
            continue;
        } else {
            message.push(line);
        }
    }
    let panic = if message.is_empty() {
        format!("panicked at {location}")
    } else {
        format!("panicked at {location}: {}", message.join("\n  "))
    };
    (Some(panic), rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_found_in_stderr() {
        let lines = vec![
            "before".to_string(),
            "thread '<unnamed>' (1) panicked at src/lib.rs:5:9:".to_string(),
            "boom".to_string(),
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace"
                .to_string(),
        ];
        let f = GuestFailure::new(
            &wasmtime::Error::msg("wasm trap: wasm `unreachable` instruction executed"),
            lines,
        );
        assert_eq!(f.summary, "panicked at src/lib.rs:5:9: boom");
        assert_eq!(f.stderr, ["before"]);
        assert!(f.backtrace.is_none());
        assert_eq!(f.details(), "\n  guest stderr:\n    before");
    }

    #[test]
    fn without_a_panic_the_cause_is_the_summary() {
        let f = GuestFailure::new(
            &wasmtime::Error::msg("event exceeded its CPU time limit"),
            Vec::new(),
        );
        assert_eq!(f.to_string(), "event exceeded its CPU time limit");
        assert_eq!(f.details(), "");
    }
}
