//! Guests get no capabilities: no files, no network, no environment beyond
//! their class's vars, no stdin. The probe guest tries each inside a real
//! host and reports what happened.

mod common;

use common::*;
use roomhost::config::ClassConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_can_reach_nothing_but_its_vars() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    let probe = config.classes.get_mut("probe").expect("the probe class");
    *probe = ClassConfig {
        vars: [("ONLY_THIS".to_string(), "1".to_string())].into(),
        ..probe.clone()
    };
    let host = start_host(config).await;
    // A port that certainly listens: the host's own.
    let port = host.addr.port();
    let (status, report) = host
        .http("GET", &format!("/probe/cap/capabilities?port={port}"), b"")
        .await;
    assert_eq!(status, 200, "{report}");
    eprintln!("what the guest tried:\n{report}");
    let lines: Vec<&str> = report.lines().collect();
    for what in [
        "read /etc/hostname",
        "list /",
        "create a file",
        "tcp connect",
        "udp send",
        "resolve localhost",
        "read stdin",
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{what}:")))
            .unwrap_or_else(|| panic!("no line for {what}:\n{report}"));
        assert!(line.contains(": denied ("), "{line}");
    }
    // The test process has PATH, HOME and more; the guest sees its var only.
    assert!(lines.contains(&r#"env: ["ONLY_THIS"]"#), "{report}");
    // Nothing was written next to the host either.
    assert!(!std::path::Path::new("probe-was-here").exists());
    assert!(!dir.path().join("probe-was-here").exists());
    host.stop().await;
}
