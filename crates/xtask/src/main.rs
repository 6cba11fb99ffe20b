//! Developer tasks. `cargo run -p xtask -- diagrams` regenerates `state-diagrams/` from the real
//! lifecycle machine: the complete machine (Mermaid and DOT), an overview and one diagram per part
//! (DOT), each rendered to SVG when Graphviz's `dot` is installed.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use gatewarden_core::diagram;

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "diagrams" => match write_diagrams(&repo_root().join("state-diagrams")) {
            Ok(written) => {
                for path in written {
                    println!("wrote {}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("xtask diagrams: {error}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: cargo run -p xtask -- diagrams");
            ExitCode::from(2)
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Write the diagrams into `dir`; returns the files written.
fn write_diagrams(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let observed = diagram::explore();
    let mut written = Vec::new();
    for (name, text) in diagram::files(&observed) {
        let path = dir.join(&name);
        std::fs::write(&path, text)?;
        written.push(path);
    }
    // The SVGs are a convenience for readers; without Graphviz the text formats are enough.
    let sources: Vec<PathBuf> = written
        .iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "dot"))
        .cloned()
        .collect();
    for source in sources {
        let svg = source.with_extension("svg");
        match Command::new("dot")
            .arg("-Tsvg")
            .arg(&source)
            .arg("-o")
            .arg(&svg)
            .status()
        {
            Ok(status) if status.success() => written.push(svg),
            Ok(status) => eprintln!(
                "dot failed on {} ({status}); skipped its SVG",
                source.display()
            ),
            Err(_) => {
                eprintln!("Graphviz `dot` not installed; skipped the SVGs");
                break;
            }
        }
    }
    Ok(written)
}
