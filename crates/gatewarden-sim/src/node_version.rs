//! The real launcher's Node runtime admission (`openclaw.mjs` of 2026.9.6), as a pure function of
//! a pretended Node version (`--fake-node-version`), so a supervisor's handling of "wrong runtime"
//! can be tested without installing an old Node.
//!
//! The real launcher probes `node:sqlite` and only then looks at the version: with no
//! `node:sqlite` (Node 20, early 22) it prints "node:sqlite is unavailable" and exits 1; with a
//! working `node:sqlite` below Node 24 it prints "openclaw requires Node ..." and exits 1; an
//! unsupported 24/25/26.0 release whose probe passes only gets a note and runs. The simulator
//! cannot run the probe on a pretended version, so it assumes `node:sqlite` exists from 22.13
//! and 23.4 on (where Node unflagged it) and that its capability probe then passes. On a real
//! 22.x the probe may fail first with a different line ("truncates TEXT at embedded NUL").

/// What the launcher does on a given runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Supported: nothing printed.
    Supported,
    /// Runs, after printing this note to stderr.
    Note(String),
    /// Prints these lines to stderr and exits 1.
    Refused(Vec<String>),
}

/// Node major recommended by the launcher's nvm hint.
const RECOMMENDED_NODE_MAJOR: u32 = 26;

/// Decides admission for `version` (`20.11.0` or `v20.11.0`, as `process.versions.node`).
pub fn admission(version: &str) -> Admission {
    let label_version = version.strip_prefix('v').unwrap_or(version);
    let label = format!("Node {label_version}");
    let Some((major, minor, patch)) = parse_release(label_version) else {
        return refused(format!(
            "{label}: openclaw requires Node >=24.16.0 <25, or >=26.1.0."
        ));
    };
    let sqlite_available =
        major >= 24 || (major == 23 && minor >= 4) || (major == 22 && minor >= 13);
    if !sqlite_available {
        return refused(format!(
            "{label}: node:sqlite is unavailable; use 24.16+/26.1+ or a build with the fix."
        ));
    }
    if major < 24 {
        return refused(format!(
            "{label}: openclaw requires Node >=24.16.0 <25, or >=26.1.0."
        ));
    }
    let supported =
        (major == 24 && (minor, patch) >= (16, 0)) || (major == 26 && minor >= 1) || major > 26;
    if supported {
        Admission::Supported
    } else {
        Admission::Note(format!(
            "{label}: unsupported version, capability probe passed. Supported releases: 24.16+/26.1+."
        ))
    }
}

/// The launcher's lines for a refused runtime: its failure with the `openclaw: ` prefix, then the nvm hint.
fn refused(failure: String) -> Admission {
    Admission::Refused(vec![
        format!("openclaw: {failure}"),
        "If you use nvm, run:".to_string(),
        format!("  nvm install {RECOMMENDED_NODE_MAJOR}"),
        format!("  nvm use {RECOMMENDED_NODE_MAJOR}"),
        format!("  nvm alias default {RECOMMENDED_NODE_MAJOR}"),
    ])
}

/// `MAJOR.MINOR.PATCH` with an optional `+build` suffix, as the launcher's release pattern.
fn parse_release(text: &str) -> Option<(u32, u32, u32)> {
    let core = text.split_once('+').map_or(text, |(core, _)| core);
    let mut parts = core.split('.');
    let mut next = || -> Option<u32> {
        let part = parts.next()?;
        let leading_zero = part.len() > 1 && part.starts_with('0');
        if part.is_empty() || leading_zero || !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let release = (next()?, next()?, next()?);
    parts.next().is_none().then_some(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_20_has_no_sqlite_and_is_refused_with_the_real_lines() {
        let Admission::Refused(lines) = admission("20.20.2") else {
            panic!("Node 20 must be refused")
        };
        assert_eq!(
            lines,
            vec![
                "openclaw: Node 20.20.2: node:sqlite is unavailable; use 24.16+/26.1+ or a build with the fix.",
                "If you use nvm, run:",
                "  nvm install 26",
                "  nvm use 26",
                "  nvm alias default 26",
            ]
        );
        assert!(
            matches!(admission("v20.11.0"), Admission::Refused(lines) if lines[0].starts_with("openclaw: Node 20.11.0: node:sqlite"))
        );
    }

    #[test]
    fn node_22_with_sqlite_is_refused_by_version() {
        let Admission::Refused(lines) = admission("22.14.0") else {
            panic!("Node 22 must be refused")
        };
        assert_eq!(
            lines[0],
            "openclaw: Node 22.14.0: openclaw requires Node >=24.16.0 <25, or >=26.1.0."
        );
        assert!(
            matches!(admission("22.12.0"), Admission::Refused(lines) if lines[0].contains("node:sqlite is unavailable"))
        );
    }

    #[test]
    fn supported_releases_run_and_unsupported_newer_ones_get_a_note() {
        for version in ["24.16.0", "24.22.3", "26.1.0", "27.0.0", "24.16.0+build.1"] {
            assert_eq!(admission(version), Admission::Supported, "{version}");
        }
        for version in ["24.15.9", "25.2.0", "26.0.0"] {
            assert!(
                matches!(admission(version), Admission::Note(_)),
                "{version}"
            );
        }
        assert!(matches!(admission("banana"), Admission::Refused(_)));
        assert!(matches!(admission("24.016.0"), Admission::Refused(_)));
    }
}
