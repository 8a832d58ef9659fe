//! The guide's and the templates' host configs are valid: every ```toml
//! block of `docs/authoring.md`, and the `roomhost.toml` that `roomhost new`
//! writes, parse as a config whose routes name its classes. (The guide's
//! Rust blocks are the `docs` crate's doctests.)

use std::path::Path;

use roomhost::Config;

/// The ```toml blocks of a Markdown text.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn check(config: &str, origin: &str) {
    let parsed = Config::from_toml(config)
        .unwrap_or_else(|e| panic!("{origin}: {}\n{config}", roomhost::error::Report(&e)));
    let orphans = parsed.routes_without_class(|_| false);
    assert!(
        orphans.is_empty(),
        "{origin}: routes without a class: {orphans:?}"
    );
}

#[test]
fn the_guides_configs_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guide = std::fs::read_to_string(root.join("docs/authoring.md")).expect("the guide");
    let blocks = toml_blocks(&guide);
    assert!(blocks.len() >= 2, "{} toml blocks", blocks.len());
    for (n, block) in blocks.iter().enumerate() {
        check(block, &format!("docs/authoring.md toml block {}", n + 1));
    }
}

#[test]
fn the_templates_configs_parse() {
    let tmp = tempfile::tempdir().expect("temp dir");
    for template in roomhost::scaffold::TEMPLATES {
        let name = format!("t-{template}");
        let dir = roomhost::scaffold::new_crate(tmp.path(), &name, template).expect("new");
        let config = std::fs::read_to_string(dir.join("roomhost.toml")).expect("config");
        check(&config, &format!("template {template}"));
    }
}
