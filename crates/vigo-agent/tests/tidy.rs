//! Tidy checks: generated docs are current and every module has a `//!` doc.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn reference_doc_matches_the_registry() {
    let generated = vigo_agent::cli::reference(&vigo_executors::Registry::builtin());
    let path = workspace().join("docs/reference.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk != generated {
        panic!(
            "docs/reference.md is out of date: run `cargo run -q --bin vigo -- types reference > docs/reference.md`"
        );
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut missing = Vec::new();
    let mut stack = vec![workspace().join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read");
                let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                if !first.starts_with("//!") {
                    missing.push(path.display().to_string());
                }
            }
        }
    }
    assert!(missing.is_empty(), "files without a `//!` doc: {missing:#?}");
}
