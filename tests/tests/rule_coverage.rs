//! Every rule of BEHAVIOUR.md must have a test whose name starts with its id in lower case
//! (`fn r6_...`). This check lists the rules without one and fails when any is missing.

use std::collections::BTreeSet;
use std::path::Path;

use gatewarden_tests::repo_root;

fn rule_ids(spec: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for piece in spec.split("**").skip(1).step_by(2) {
        let mut chars = piece.chars();
        let letter = chars.next();
        let digits: String = chars.collect();
        if letter.is_some_and(|c| c.is_ascii_uppercase())
            && !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
        {
            ids.insert(piece.to_string());
        }
    }
    ids
}

fn collect_rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') && !name.starts_with("target-") {
                collect_rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Ids that have a function named `<id>_...` somewhere in the workspace.
fn tested_ids() -> BTreeSet<String> {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["crates", "tests", "fuzz"] {
        collect_rust_files(&root.join(dir), &mut files);
    }
    let mut tested = BTreeSet::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for piece in text.split("fn ").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if let Some((id, _)) = name.split_once('_') {
                let mut chars = id.chars();
                if chars.next().is_some_and(|c| c.is_ascii_lowercase())
                    && chars.clone().count() > 0
                    && chars.all(|c| c.is_ascii_digit())
                {
                    tested.insert(id.to_ascii_uppercase());
                }
            }
        }
    }
    tested
}

#[test]
fn every_rule_has_a_test_named_after_it() {
    let spec_path = repo_root().join("docs/spec/BEHAVIOUR.md");
    let spec = std::fs::read_to_string(&spec_path).expect("docs/spec/BEHAVIOUR.md is committed");
    let shared = repo_root().join("../shared/spec/BEHAVIOUR.md");
    if let Ok(upstream) = std::fs::read_to_string(&shared) {
        if upstream != spec {
            eprintln!("warning: docs/spec/BEHAVIOUR.md differs from ../shared/spec/BEHAVIOUR.md; refresh the copy");
        }
    }
    let ids = rule_ids(&spec);
    assert!(ids.len() >= 50, "parsed only {} rule ids", ids.len());
    let tested = tested_ids();
    let missing: Vec<&String> = ids.iter().filter(|id| !tested.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "rules without a test named after them: {missing:?}"
    );
}

#[test]
fn rule_id_parser_finds_bold_ids_only() {
    let ids = rule_ids("- **S1** text **bold** and **L10** then **beyond**");
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), vec!["L10", "S1"]);
}
