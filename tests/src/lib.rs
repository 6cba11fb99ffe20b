//! Workspace-wide checks and cross-crate integration tests live in `tests/tests/`; this library
//! holds what they share.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
