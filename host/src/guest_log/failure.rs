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
        let panicked = panic.is_some();
        let summary = match panic {
            // A Rust panic ends in `unreachable`: the panic says it all.
            Some(p) if cause.contains("unreachable") => p,
            Some(p) => format!("{p} ({cause})"),
            None => cause,
        };
        let backtrace = error
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .map(|bt| frames(&bt.to_string(), panicked));
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

/// The frames of wasmtime's backtrace text, without its heading, without
/// the crate hashes of demangled names (`std[d123b7a1a2ed1472]::` →
/// `std::`), and — after a panic — without the frames of the panic
/// machinery itself (std's and core's `panicking`, the abort): the first
/// frame left is the guest's.
fn frames(text: &str, panicked: bool) -> String {
    let lines: Vec<String> = text
        .lines()
        .skip_while(|l| l.starts_with("error while executing"))
        .map(strip_crate_hashes)
        .collect();
    let machinery = |l: &String| {
        l.contains("::panicking::") || l.contains("rust_begin_unwind") || l.contains("__rust_")
    };
    let start = match lines.iter().rposition(machinery) {
        Some(last) if panicked && last + 1 < lines.len() => last + 1,
        _ => 0,
    };
    lines[start..].join("\n")
}

/// `name[0123456789abcdef]` → `name`.
fn strip_crate_hashes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find('[') {
        let after = &rest[at + 1..];
        let hash = after.len() > 16
            && after.as_bytes()[16] == b']'
            && after[..16].bytes().all(|b| b.is_ascii_hexdigit());
        if hash {
            out.push_str(&rest[..at]);
            rest = &after[17..];
        } else {
            out.push_str(&rest[..=at]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

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
    fn a_backtrace_starts_at_the_guest_after_a_panic() {
        let text = "error while executing at wasm backtrace:\n    \
            0:   0x6cc8 - g.wasm!abort\n    \
            1:   0x2e8e - g.wasm!std[d123b7a1a2ed1472]::panicking::panic_with_hook\n    \
            2:   0xb7ee - g.wasm!core[6d9e98711c484d2e]::panicking::panic_fmt\n    \
            3:   0x1b41 - g.wasm!g::Guest::on_request\n    \
            4:   0x1b42 - g.wasm!roomhost:object/handler@0.1.0#on-request";
        assert_eq!(
            frames(text, true),
            "    3:   0x1b41 - g.wasm!g::Guest::on_request\n    4:   0x1b42 - g.wasm!roomhost:object/handler@0.1.0#on-request"
        );
        let all = frames(text, false);
        assert_eq!(all.lines().count(), 5);
        assert!(
            all.contains("g.wasm!std::panicking::panic_with_hook"),
            "{all}"
        );
        assert_eq!(strip_crate_hashes("a[1] b[xyz]"), "a[1] b[xyz]");
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
