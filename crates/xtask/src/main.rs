//! Developer tasks. `cargo run -p xtask -- diagrams` regenerates `state-diagrams/` from the real
//! lifecycle machine (Mermaid and DOT always; SVG when Graphviz's `dot` is installed).

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
    let mermaid = dir.join("lifecycle.mmd");
    let dot = dir.join("lifecycle.dot");
    std::fs::write(&mermaid, diagram::mermaid(&observed))?;
    std::fs::write(&dot, diagram::dot(&observed))?;
    let mut written = vec![mermaid, dot.clone()];
    let svg = dir.join("lifecycle.svg");
    // The SVG is a convenience for readers; without Graphviz the text formats are enough.
    match Command::new("dot")
        .arg("-Tsvg")
        .arg(&dot)
        .arg("-o")
        .arg(&svg)
        .status()
    {
        Ok(status) if status.success() => written.push(svg),
        Ok(status) => eprintln!("dot failed ({status}); skipped the SVG"),
        Err(_) => eprintln!("Graphviz `dot` not installed; skipped the SVG"),
    }
    Ok(written)
}
