//! Replays the fuzz targets' corpora (`fuzz/corpus/<target>/`: seed inputs,
//! minimized findings, and a regression input for every crash fixed)
//! through the same entry points the fuzz targets call
//! (`roomhost::fuzzing`), so that a plain `cargo test` keeps every finding
//! fixed. A target whose corpus is missing or empty fails.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// A fuzz target's entry point.
type Entry = fn(&[u8]);

/// Every fuzz target (`fuzz/fuzz_targets/<name>.rs`) and its entry point.
const TARGETS: &[(&str, Entry)] = &[
    ("frame_decoder", roomhost::fuzzing::frame_decoder),
    ("router", roomhost::fuzzing::router),
    ("config", roomhost::fuzzing::config),
    ("storage_ranges", roomhost::fuzzing::storage_ranges),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of a directory, sorted (none when it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_fuzz_target_has_a_corpus_and_it_replays_clean() {
    let fuzz = fuzz_dir();
    let mut targets: Vec<String> = files(&fuzz.join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    targets.sort();
    let mut known: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    known.sort();
    assert_eq!(targets, known, "fuzz/fuzz_targets/ and this test's list");
    for (name, entry) in TARGETS {
        let corpus = files(&fuzz.join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name}/ is missing or empty"
        );
        // Regression inputs kept as artifacts, if any.
        let artifacts = files(&fuzz.join("artifacts").join(name));
        for file in corpus.iter().chain(&artifacts) {
            let data = std::fs::read(file).unwrap();
            let replay = std::panic::catch_unwind(|| entry(&data));
            assert!(
                replay.is_ok(),
                "{name}: {} fails (replay it: cargo fuzz run {name} {})",
                file.display(),
                file.display()
            );
        }
        println!(
            "{name}: {} corpus inputs, {} artifacts replayed",
            corpus.len(),
            artifacts.len()
        );
    }
}
