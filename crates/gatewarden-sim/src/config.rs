//! The gateway config file: where it lives, the closed top-level schema, and `doctor --fix`.
//!
//! Only the parts a supervisor can trip over are modelled: an unknown top-level key makes the
//! config invalid (exit 78 with the real gateway's stderr lines), and `doctor --fix` removes such keys.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Exit code of the real gateway for an invalid or missing config (`EX_CONFIG`).
pub const EXIT_INVALID_CONFIG: i32 = 78;

/// Top-level keys the simulator accepts; the real schema is closed, so anything else is rejected.
pub const ALLOWED_TOP_LEVEL_KEYS: &[&str] = &[
    "$schema",
    "meta",
    "env",
    "wizard",
    "diagnostics",
    "logging",
    "update",
    "browser",
    "ui",
    "auth",
    "models",
    "agents",
    "tools",
    "bindings",
    "broadcast",
    "audio",
    "messages",
    "commands",
    "approvals",
    "session",
    "cron",
    "hooks",
    "web",
    "channels",
    "discovery",
    "canvasHost",
    "talk",
    "gateway",
    "memory",
    "plugins",
    "skills",
    "secrets",
    "nodes",
];

/// What was found at the config path.
#[derive(Debug, Default)]
pub struct LoadedConfig {
    /// The parsed document; `None` when the file does not exist (which is fine).
    pub document: Option<Map<String, Value>>,
}

impl LoadedConfig {
    /// `gateway.port` when it is a valid port number.
    pub fn gateway_port(&self) -> Option<u16> {
        let port = self
            .document
            .as_ref()?
            .get("gateway")?
            .get("port")?
            .as_u64()?;
        u16::try_from(port).ok()
    }

    /// `gateway.auth.token`: below `--token`, above `OPENCLAW_GATEWAY_TOKEN`.
    pub fn gateway_token(&self) -> Option<String> {
        let token = self
            .document
            .as_ref()?
            .get("gateway")?
            .get("auth")?
            .get("token")?
            .as_str()?;
        (!token.is_empty()).then(|| token.to_string())
    }
}

/// Why a config file was rejected; each variant renders the real gateway's stderr lines.
#[derive(Debug)]
pub enum ConfigProblem {
    /// The file exists but cannot be read.
    Unreadable(String),
    /// The file is not JSON5 or not an object.
    Unparseable(String),
    /// Top-level keys outside the schema.
    UnrecognizedKeys(Vec<String>),
}

impl ConfigProblem {
    /// The lines printed to stderr before exiting 78 (the supervisor's invalid-config signals match
    /// them). The shape is the real 2026.9.6 gateway's for unknown keys (seen live: `<root>:` for a
    /// top-level key, `openclaw.json:N — gateway:` for a nested one, which the simulator does not
    /// check); the unreadable and unparseable details are the simulator's own wording.
    pub fn stderr_lines(&self, path: &Path) -> Vec<String> {
        let mut lines = self.message_lines(path);
        lines[0] = format!("Gateway failed to start: {}", lines[0]);
        lines
    }

    /// The text of the real gateway's `InvalidConfigError` message, one entry per line:
    /// `Invalid config at <path>:`, the problems, the doctor hint and the `.bak` hint.
    fn message_lines(&self, path: &Path) -> Vec<String> {
        let mut lines = vec![format!("Invalid config at {}:", path.display())];
        match self {
            ConfigProblem::Unreadable(error) => {
                lines.push(format!("<root>: cannot read file: {error}"))
            }
            ConfigProblem::Unparseable(error) => {
                lines.push(format!("<root>: invalid JSON5: {error}"))
            }
            ConfigProblem::UnrecognizedKeys(keys) => {
                for key in keys {
                    lines.push(format!("<root>: Unrecognized key: \"{key}\""));
                }
            }
        }
        lines.push("Run \"openclaw doctor --fix\" to repair, then retry.".to_string());
        lines.push(
            "If startup is still blocked, inspect the adjacent .bak backup before restoring it manually."
                .to_string(),
        );
        lines
    }

    /// What the real gateway writes to stderr when an in-process restart meets this config and the
    /// process stays alive without a listener (seen live on 2026.9.6 after SIGUSR2; its line also
    /// starts with a timestamp, and the error's stack frames follow, which the simulator leaves out):
    ///
    /// ```text
    /// [gateway] startup failed: Invalid config at /path/openclaw.json:
    /// <root>: Unrecognized key: "x"
    /// Run "openclaw doctor --fix" to repair, then retry.
    /// If startup is still blocked, inspect the adjacent .bak backup before restoring it manually.. Process will stay alive; fix the issue and restart.
    /// InvalidConfigError: Invalid config at /path/openclaw.json:
    /// <root>: Unrecognized key: "x"
    /// Run "openclaw doctor --fix" to repair, then retry.
    /// If startup is still blocked, inspect the adjacent .bak backup before restoring it manually.
    /// ```
    ///
    /// (The doubled period is the real one: the message ends with one and the log line adds another.)
    pub fn restart_failure_text(&self, path: &Path) -> String {
        let message = self.message_lines(path).join("\n");
        format!(
            "[gateway] startup failed: {message}. {RESTART_FAILURE_SUFFIX}\nInvalidConfigError: {message}\n"
        )
    }
}

/// How the real gateway's in-place restart failure line ends; the supervisor's early exit keys on it.
pub const RESTART_FAILURE_SUFFIX: &str = "Process will stay alive; fix the issue and restart.";

/// What the real 2026.9.6 gateway prints before exiting 78 when another gateway holds its state
/// directory (seen live with a second gateway on the same `OPENCLAW_STATE_DIR`; the supervisor's
/// L7 rule must not mistake it for an invalid config).
pub const STATE_LOCK_CONFLICT_LINES: [&str; 3] = [
    "Doctor could not enter maintenance. StateDatabaseCoordinatorContentionError: another OpenClaw process owns gateway-lifecycle Stop the Gateway service and other OpenClaw processes using this state, then run openclaw doctor --fix from an independent shell.",
    "[gateway] requires state migration. Stop the service with openclaw gateway stop (or its service owner), then run openclaw doctor --fix, then start it again with openclaw gateway start.",
    "Gateway failed to start: Doctor could not enter maintenance. StateDatabaseCoordinatorContentionError: another OpenClaw process owns gateway-lifecycle Stop the Gateway service and other OpenClaw processes using this state, then run openclaw doctor --fix from an independent shell. | gateway.maintenance_required. Stop the service with openclaw gateway stop (or its service owner), then run openclaw doctor --fix, then start it again with openclaw gateway start.",
];

/// The lock file inside a state directory; held (`flock`) for the whole life of one simulator.
pub const STATE_LOCK_FILE: &str = "gateway-lifecycle.lock";

/// Why the state directory could not be locked.
#[derive(Debug)]
pub enum StateLockError {
    /// Another live process holds it.
    Held,
    /// The lock file could not be opened or locked for another reason.
    Io(std::io::Error),
}

/// One gateway per state directory: an exclusive, non-blocking `flock` on
/// [`STATE_LOCK_FILE`], released when the returned file is dropped or the process dies.
pub fn lock_state_dir(dir: &Path) -> Result<std::fs::File, StateLockError> {
    use std::os::unix::io::AsRawFd;
    std::fs::create_dir_all(dir).map_err(StateLockError::Io)?;
    // Opened close-on-exec (std's default), so a spawned grandchild never inherits the lock.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(STATE_LOCK_FILE))
        .map_err(StateLockError::Io)?;
    // SAFETY: flock on a descriptor we own, with no pointers involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked == 0 {
        return Ok(file);
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(StateLockError::Held)
    } else {
        Err(StateLockError::Io(error))
    }
}

/// The config path: `--config`, else `OPENCLAW_CONFIG_PATH`, else `$OPENCLAW_STATE_DIR/openclaw.json`,
/// else `$HOME/.openclaw/openclaw.json`.
pub fn resolve_path(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(path) = env("OPENCLAW_CONFIG_PATH").filter(|path| !path.is_empty()) {
        return PathBuf::from(path);
    }
    if let Some(dir) = env("OPENCLAW_STATE_DIR").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir).join("openclaw.json");
    }
    let home = env("HOME").unwrap_or_else(|| ".".to_string());
    PathBuf::from(home).join(".openclaw").join("openclaw.json")
}

/// Reads and validates the config; a missing file is an empty, valid config.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigProblem> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LoadedConfig::default())
        }
        Err(error) => return Err(ConfigProblem::Unreadable(error.to_string())),
    };
    let document = parse_document(&text)?;
    let unknown = unknown_keys(&document);
    if !unknown.is_empty() {
        return Err(ConfigProblem::UnrecognizedKeys(unknown));
    }
    Ok(LoadedConfig {
        document: Some(document),
    })
}

fn parse_document(text: &str) -> Result<Map<String, Value>, ConfigProblem> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match json5::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ConfigProblem::Unparseable(
            "top level must be an object".to_string(),
        )),
        Err(error) => Err(ConfigProblem::Unparseable(error.to_string())),
    }
}

fn unknown_keys(document: &Map<String, Value>) -> Vec<String> {
    document
        .keys()
        .filter(|key| !ALLOWED_TOP_LEVEL_KEYS.contains(&key.as_str()))
        .cloned()
        .collect()
}

/// Runs `doctor`: reports problems, and with `fix` rewrites the file without unknown keys.
/// Returns the process exit code.
pub fn run_doctor(path: &Path, fix: bool) -> i32 {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            println!("Doctor: no config at {}; nothing to fix", path.display());
            return 0;
        }
        Err(error) => {
            eprintln!("Doctor: cannot read {}: {error}", path.display());
            return 1;
        }
    };
    let mut document = match parse_document(&text) {
        Ok(document) => document,
        Err(problem) => {
            // Rewriting a file we cannot parse would lose the user's settings; the real doctor refuses too.
            for line in problem.stderr_lines(path) {
                eprintln!("{line}");
            }
            eprintln!("Doctor: cannot repair a file that does not parse");
            return 1;
        }
    };
    let unknown = unknown_keys(&document);
    if unknown.is_empty() {
        println!("Doctor: config {} is valid; nothing to fix", path.display());
        return 0;
    }
    for key in &unknown {
        println!("Doctor: unrecognized key \"{key}\" in {}", path.display());
    }
    if !fix {
        println!("Doctor: run with --fix to remove them");
        return 0;
    }
    for key in &unknown {
        document.remove(key);
    }
    let repaired = match serde_json::to_string_pretty(&Value::Object(document)) {
        Ok(repaired) => repaired,
        Err(error) => {
            eprintln!("Doctor: cannot serialize repaired config: {error}");
            return 1;
        }
    };
    // Like the real doctor, keep the original next to it (the gateway's invalid-config message
    // points users at that `.bak`).
    let mut backup = path.as_os_str().to_owned();
    backup.push(".bak");
    let backup = PathBuf::from(backup);
    if let Err(error) = std::fs::write(&backup, &text) {
        eprintln!("Doctor: cannot write {}: {error}", backup.display());
        return 1;
    }
    if let Err(error) = std::fs::write(path, repaired + "\n") {
        eprintln!("Doctor: cannot write {}: {error}", path.display());
        return 1;
    }
    for key in &unknown {
        println!("Doctor: removed unrecognized key \"{key}\"");
    }
    println!("Updated config: {}", path.display());
    println!("  Backup: {}", backup.display());
    println!("Doctor: repaired {}", path.display());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_resolution_prefers_flag_then_config_env_then_state_dir_then_home() {
        let env = |name: &str| match name {
            "OPENCLAW_STATE_DIR" => Some("/state".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        assert_eq!(
            resolve_path(Some(Path::new("/x.json")), &env),
            PathBuf::from("/x.json")
        );
        assert_eq!(
            resolve_path(None, &env),
            PathBuf::from("/state/openclaw.json")
        );
        let home_only = |name: &str| (name == "HOME").then(|| "/home/u".to_string());
        assert_eq!(
            resolve_path(None, &home_only),
            PathBuf::from("/home/u/.openclaw/openclaw.json")
        );
    }

    #[test]
    fn a_state_dir_is_locked_by_one_holder_at_a_time() {
        let dir = tempfile_dir();
        let first = lock_state_dir(&dir).expect("first lock");
        assert!(matches!(lock_state_dir(&dir), Err(StateLockError::Held)));
        drop(first);
        lock_state_dir(&dir).expect("free again once the holder is gone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A fresh directory under the system temp dir (the crate has no tempfile dependency).
    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gatewarden-sim-lock-{}-{}",
            std::process::id(),
            crate::state::unix_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn restart_failure_text_is_the_real_gateways_stay_alive_line() {
        let text = ConfigProblem::UnrecognizedKeys(vec!["bogusKey".into()])
            .restart_failure_text(Path::new("/s/openclaw.json"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "[gateway] startup failed: Invalid config at /s/openclaw.json:",
                "<root>: Unrecognized key: \"bogusKey\"",
                "Run \"openclaw doctor --fix\" to repair, then retry.",
                "If startup is still blocked, inspect the adjacent .bak backup before restoring it manually.. Process will stay alive; fix the issue and restart.",
                "InvalidConfigError: Invalid config at /s/openclaw.json:",
                "<root>: Unrecognized key: \"bogusKey\"",
                "Run \"openclaw doctor --fix\" to repair, then retry.",
                "If startup is still blocked, inspect the adjacent .bak backup before restoring it manually.",
            ]
        );
    }

    #[test]
    fn unknown_top_level_key_is_reported_with_the_real_lines() {
        let document = parse_document("{gateway: {port: 1}, foo: 1, // comment\n}").unwrap();
        assert_eq!(unknown_keys(&document), vec!["foo".to_string()]);
        let lines =
            ConfigProblem::UnrecognizedKeys(vec!["foo".into()]).stderr_lines(Path::new("/c.json"));
        assert_eq!(
            lines[0],
            "Gateway failed to start: Invalid config at /c.json:"
        );
        assert_eq!(lines[1], "<root>: Unrecognized key: \"foo\"");
        assert_eq!(
            lines[2],
            "Run \"openclaw doctor --fix\" to repair, then retry."
        );
    }
}
