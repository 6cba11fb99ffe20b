//! Launch profiles: how to run the bundled simulator, the real OpenClaw gateway, or any command
//! that speaks the protocol, and how to run its doctor repair (L6).

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use gatewarden_core::config::ReloadSignal;

use crate::launch::{LaunchSpec, Secret, GATEWAY_TOKEN_ENV};

/// The port of the bundled simulator profile: deliberately not the real gateway's 18789, so trying
/// gatewarden never touches a gateway already running on the machine (O1).
pub const SIM_DEFAULT_PORT: u16 = 18791;

/// How to get a simulator, said by every "not found" error.
const SIM_HINT: &str = "Build it with `cargo build -p gatewarden-sim` (it lands next to your own \
binaries in target/<profile>/), or install the CLI with `cargo install --path \
crates/gatewarden-cli` (its `gatewarden sim` is used from PATH), or point GATEWARDEN_SIM_BIN at a \
gatewarden-sim binary.";

/// The real gateway's default port.
pub const OPENCLAW_DEFAULT_PORT: u16 = 18789;

/// Which gateway to run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LaunchProfile {
    /// The bundled `gatewarden-sim`.
    Sim {
        /// The binary; found next to the running executable (or on PATH) when `None`.
        program: Option<PathBuf>,
        /// Extra arguments (fault flags in tests, `--tick-interval-ms`, ...).
        extra_args: Vec<String>,
    },
    /// The simulator embedded in another binary (the `gatewarden` CLI): `<program> sim ...`.
    EmbeddedSim {
        /// The binary that embeds it (usually the running `gatewarden`).
        program: PathBuf,
        /// Extra arguments, as for [`LaunchProfile::Sim`].
        extra_args: Vec<String>,
    },
    /// The real OpenClaw gateway: `node <entry> gateway run --port N --bind loopback --auth token
    /// --allow-unconfigured`, token through `OPENCLAW_GATEWAY_TOKEN`, never argv.
    OpenClaw {
        /// The Node.js binary (24 or newer).
        node: PathBuf,
        /// `node_modules/openclaw/openclaw.mjs`.
        entry: PathBuf,
    },
    /// Any command that speaks the protocol. `{port}` in an argument is replaced by the port.
    Custom {
        /// The program.
        program: PathBuf,
        /// Its arguments.
        args: Vec<String>,
    },
}

/// A profile that cannot be launched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The simulator binary was not found; says where we looked and how to get one.
    #[error("gatewarden-sim not found (tried: {tried}).\n{SIM_HINT}")]
    SimNotFound {
        /// The places tried.
        tried: String,
    },
    /// P4: SIGUSR1 opens Node's inspector on OpenClaw; it is never sent to it.
    #[error("the openclaw profile never sends SIGUSR1 (it opens the Node inspector); use SIGUSR2")]
    Sigusr1ForOpenClaw,
    /// F3: the Node.js binary does not satisfy the package's `engines.node`.
    #[error(
        "Node {found} ({node}) does not satisfy openclaw's engines.node \"{required}\"; \
         install a supported Node and pass it with --node"
    )]
    NodeTooOld {
        /// The binary.
        node: String,
        /// `node --version` without the `v`.
        found: String,
        /// The package's range.
        required: String,
    },
}

impl ProfileError {
    /// F3: a runtime that cannot run the gateway (retrying cannot fix it).
    pub fn is_runtime_incompatible(&self) -> bool {
        matches!(self, ProfileError::NodeTooOld { .. })
    }
}

impl LaunchProfile {
    /// The simulator with default arguments.
    pub fn sim() -> Self {
        LaunchProfile::Sim {
            program: None,
            extra_args: Vec::new(),
        }
    }

    /// The default port of this profile.
    pub fn default_port(&self) -> u16 {
        match self {
            LaunchProfile::Sim { .. } | LaunchProfile::EmbeddedSim { .. } => SIM_DEFAULT_PORT,
            _ => OPENCLAW_DEFAULT_PORT,
        }
    }

    /// The gateway's own state directory inside the supervisor's (sim and OpenClaw profiles get
    /// their own, so they never read the user's real `~/.openclaw`).
    pub fn gateway_state_dir(state_dir: &Path) -> PathBuf {
        state_dir.join("gateway")
    }

    /// P1: the gateway config file the reload policy is read from.
    pub fn gateway_config_path(&self, state_dir: &Path) -> PathBuf {
        Self::gateway_state_dir(state_dir).join("openclaw.json")
    }

    /// The program, and whether the simulator is its `sim` subcommand.
    fn program(&self) -> Result<SimProgram, ProfileError> {
        match self {
            LaunchProfile::Sim { program, .. } => match program {
                Some(program) => Ok(SimProgram::Standalone(program.clone())),
                None => find_simulator(),
            },
            LaunchProfile::EmbeddedSim { program, .. } => Ok(SimProgram::Embedded(program.clone())),
            LaunchProfile::OpenClaw { node, .. } => Ok(SimProgram::Standalone(node.clone())),
            LaunchProfile::Custom { program, .. } => Ok(SimProgram::Standalone(program.clone())),
        }
    }

    fn base_spec(&self, state_dir: &Path) -> Result<LaunchSpec, ProfileError> {
        let gateway_state = Self::gateway_state_dir(state_dir);
        let spec = self
            .program()?
            .spec()
            // Restart in place on SIGUSR2 (same pid), and never hand restarts to a service
            // manager the child merely inherited markers of.
            .env("OPENCLAW_NO_RESPAWN", "1")
            .scrub_service_markers()
            .env(
                "OPENCLAW_STATE_DIR",
                gateway_state.to_string_lossy().into_owned(),
            )
            .env(
                "OPENCLAW_CONFIG_PATH",
                self.gateway_config_path(state_dir)
                    .to_string_lossy()
                    .into_owned(),
            );
        Ok(spec)
    }

    /// X1: what to spawn for `port`. The token goes into the environment (A3).
    pub fn launch_spec(
        &self,
        port: u16,
        token: Option<&Secret>,
        state_dir: &Path,
    ) -> Result<LaunchSpec, ProfileError> {
        let mut spec = self.base_spec(state_dir)?.port(port);
        if let Some(token) = token {
            spec = spec.secret_env(GATEWAY_TOKEN_ENV, token.clone());
        }
        let port_text = port.to_string();
        let spec = match self {
            // `sim` is already there when the simulator is a subcommand (base_spec).
            LaunchProfile::Sim { extra_args, .. }
            | LaunchProfile::EmbeddedSim { extra_args, .. } => spec
                .args(["--port", port_text.as_str()])
                .args(extra_args.iter().map(String::as_str)),
            LaunchProfile::OpenClaw { entry, .. } => spec
                // No mDNS announcements on the LAN for a loopback gateway (as the seed's project).
                .env("OPENCLAW_DISABLE_BONJOUR", "1")
                // Per-phase startup timings on stderr, read into the startup metric.
                .env("OPENCLAW_GATEWAY_STARTUP_TRACE", "1")
                .arg(entry.to_string_lossy())
                .args([
                    "gateway",
                    "run",
                    "--port",
                    port_text.as_str(),
                    "--bind",
                    "loopback",
                    "--auth",
                    "token",
                    "--allow-unconfigured",
                ]),
            LaunchProfile::Custom { args, .. } => {
                spec.args(args.iter().map(|arg| arg.replace("{port}", &port_text)))
            }
        };
        Ok(spec)
    }

    /// L6: `<gateway> doctor --fix --yes --non-interactive`.
    pub fn doctor_spec(&self, state_dir: &Path) -> Result<LaunchSpec, ProfileError> {
        let spec = self.base_spec(state_dir)?;
        let spec = match self {
            LaunchProfile::OpenClaw { entry, .. } => spec.arg(entry.to_string_lossy()),
            _ => spec,
        };
        Ok(spec.args(["doctor", "--fix", "--yes", "--non-interactive"]))
    }

    /// P4: does this gateway's reload signal make it restart in place (a `shutdown` event with
    /// `restartExpectedMs`, close 1012, same pid)? OpenClaw's SIGUSR2 does, with the
    /// `OPENCLAW_NO_RESPAWN=1` this profile sets. (So does the simulator's, but its tests keep the
    /// seed's fixed post-signal check by default.)
    pub fn reload_restarts_in_place(&self) -> bool {
        matches!(self, LaunchProfile::OpenClaw { .. })
    }

    /// F3: before spawning the openclaw profile, check `node --version` against the package's
    /// `engines.node` (`package.json` next to the entry). A version or range that cannot be read
    /// is not a refusal (the gateway's own check still runs); only a clear mismatch is.
    pub async fn check_runtime(&self) -> Result<(), ProfileError> {
        let LaunchProfile::OpenClaw { node, entry } = self else {
            return Ok(());
        };
        let Some(required) = engines_node(entry).await else {
            return Ok(());
        };
        let Some(found) = node_version(node).await else {
            return Ok(());
        };
        match version_satisfies(&found, &required) {
            Some(false) => Err(ProfileError::NodeTooOld {
                node: node.display().to_string(),
                found,
                required,
            }),
            _ => Ok(()),
        }
    }

    /// P4: the signal that asks this gateway to reload. SIGUSR1 is refused for OpenClaw.
    pub fn reload_signal(&self, configured: ReloadSignal) -> Result<Signal, ProfileError> {
        match (self, configured) {
            (LaunchProfile::OpenClaw { .. }, ReloadSignal::Sigusr1) => {
                Err(ProfileError::Sigusr1ForOpenClaw)
            }
            (_, ReloadSignal::Sigusr1) => Ok(Signal::SIGUSR1),
            (_, ReloadSignal::Sigusr2) => Ok(Signal::SIGUSR2),
            (_, ReloadSignal::Sighup) => Ok(Signal::SIGHUP),
        }
    }
}

/// How long `node --version` may take (a cold start of Node on a loaded machine).
const NODE_VERSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `engines.node` of the package holding `entry` (`package.json` next to `openclaw.mjs`).
async fn engines_node(entry: &Path) -> Option<String> {
    let package = entry.parent()?.join("package.json");
    let text = tokio::fs::read_to_string(package).await.ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value
        .get("engines")?
        .get("node")?
        .as_str()
        .map(str::to_string)
}

/// `node --version` without its `v`.
async fn node_version(node: &Path) -> Option<String> {
    let run = tokio::process::Command::new(node)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(NODE_VERSION_TIMEOUT, run)
        .await
        .ok()?
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Some(text.trim().trim_start_matches('v').to_string())
}

/// A dotted version, missing parts as 0: `24.16` → (24, 16, 0). Pre-release tags are ignored.
fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let core = text.trim().trim_start_matches(['v', '=']);
    let core = core.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |part| part.parse().ok())?;
    let patch = parts.next().map_or(Some(0), |part| part.parse().ok())?;
    Some((major, minor, patch))
}

/// F3: does `version` satisfy the npm range `range` (`||` of space-separated comparators:
/// `>=`, `>`, `<=`, `<`, `=`, a bare version, `^`, `~`)? `None` when either cannot be read.
pub fn version_satisfies(version: &str, range: &str) -> Option<bool> {
    let version = parse_version(version)?;
    let mut any = false;
    for alternative in range.split("||") {
        let mut all = true;
        let mut comparators = 0;
        for comparator in alternative.split_whitespace() {
            comparators += 1;
            let (op, rest) = ["^", "~", ">=", "<=", ">", "<", "="]
                .iter()
                .find_map(|op| comparator.strip_prefix(op).map(|rest| (*op, rest)))
                .unwrap_or(("=", comparator));
            let bound = parse_version(rest)?;
            let holds = match op {
                ">=" => version >= bound,
                ">" => version > bound,
                "<=" => version <= bound,
                "<" => version < bound,
                "^" => version >= bound && version < (bound.0 + 1, 0, 0),
                "~" => version >= bound && version < (bound.0, bound.1 + 1, 0),
                _ => version == bound,
            };
            all &= holds;
        }
        if comparators == 0 {
            return None;
        }
        any |= all;
    }
    Some(any)
}

/// Find `gatewarden-sim`: `$GATEWARDEN_SIM_BIN`, next to the running executable (and one folder up,
/// for test binaries in `target/*/deps`), then `PATH`.
/// Where the simulator is: its own binary, or the `sim` subcommand of a `gatewarden` CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimProgram {
    /// `gatewarden-sim`.
    Standalone(PathBuf),
    /// A `gatewarden` binary, run as `gatewarden sim ...`.
    Embedded(PathBuf),
}

impl SimProgram {
    /// The spec that runs it, before any argument of the profile.
    fn spec(self) -> LaunchSpec {
        match self {
            SimProgram::Standalone(program) => LaunchSpec::new(program),
            SimProgram::Embedded(program) => LaunchSpec::new(program).arg("sim"),
        }
    }
}

/// Find the simulator for [`LaunchProfile::sim`], the way the CLI does: `$GATEWARDEN_SIM_BIN`
/// (an error when set to a missing file, not a silent fallback), then `gatewarden-sim` next to
/// the running executable and one folder up (test and example binaries live in
/// `target/*/deps` and `target/*/examples`), then a `gatewarden` there, then `gatewarden-sim` and
/// `gatewarden` on `PATH`. A `gatewarden` found runs its built-in simulator (`gatewarden sim`).
/// The error says where it looked and how to build or install one.
pub fn find_simulator() -> Result<SimProgram, ProfileError> {
    search_simulator(
        std::env::var_os("GATEWARDEN_SIM_BIN").filter(|value| !value.is_empty()),
        std::env::current_exe().ok(),
        std::env::var_os("PATH"),
    )
}

/// Find the standalone `gatewarden-sim` binary only (tools that run it directly): as
/// [`find_simulator`], without the `gatewarden sim` fallbacks.
pub fn find_sim_binary() -> Result<PathBuf, ProfileError> {
    match find_simulator()? {
        SimProgram::Standalone(path) => Ok(path),
        SimProgram::Embedded(path) => Err(ProfileError::SimNotFound {
            tried: format!(
                "only {} was found, which runs the simulator as `gatewarden sim`",
                path.display()
            ),
        }),
    }
}

/// The search of [`find_simulator`] over explicit inputs (the environment is read by the
/// caller), so it can be tested without touching the process environment.
fn search_simulator(
    explicit: Option<std::ffi::OsString>,
    exe: Option<PathBuf>,
    path: Option<std::ffi::OsString>,
) -> Result<SimProgram, ProfileError> {
    if let Some(explicit) = explicit {
        let explicit = PathBuf::from(explicit);
        if explicit.is_file() {
            return Ok(SimProgram::Standalone(explicit));
        }
        return Err(ProfileError::SimNotFound {
            tried: format!("{} from GATEWARDEN_SIM_BIN", explicit.display()),
        });
    }
    let mut tried = Vec::new();
    let mut near_exe = Vec::new();
    let mut dir = exe.as_deref().and_then(Path::parent).map(Path::to_path_buf);
    for _ in 0..2 {
        let Some(current) = dir else { break };
        tried.push(current.display().to_string());
        dir = current.parent().map(Path::to_path_buf);
        near_exe.push(current);
    }
    let on_path: Vec<PathBuf> = path
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    if !on_path.is_empty() {
        tried.push("PATH".to_string());
    }
    // Next to the executable first (what the same build produced), the standalone binary
    // before the CLI's subcommand in each place.
    for dirs in [&near_exe, &on_path] {
        for (name, wrap) in [
            (
                "gatewarden-sim",
                SimProgram::Standalone as fn(PathBuf) -> SimProgram,
            ),
            ("gatewarden", SimProgram::Embedded),
        ] {
            if let Some(found) = dirs
                .iter()
                .map(|dir| dir.join(name))
                .find(|c| is_executable(c))
            {
                return Ok(wrap(found));
            }
        }
    }
    Err(ProfileError::SimNotFound {
        tried: format!("gatewarden-sim and gatewarden in {}", tried.join(", ")),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p4_openclaw_profile_never_sends_sigusr1() {
        let profile = LaunchProfile::OpenClaw {
            node: "node".into(),
            entry: "openclaw.mjs".into(),
        };
        assert_eq!(
            profile.reload_signal(ReloadSignal::Sigusr1),
            Err(ProfileError::Sigusr1ForOpenClaw)
        );
        assert_eq!(
            profile.reload_signal(ReloadSignal::Sigusr2),
            Ok(Signal::SIGUSR2)
        );
    }

    #[test]
    fn a3_openclaw_token_goes_to_the_environment_not_argv() {
        let profile = LaunchProfile::OpenClaw {
            node: "/usr/bin/node".into(),
            entry: "/opt/openclaw.mjs".into(),
        };
        let token = Secret::new("s3cr3t-token-value");
        let spec = profile
            .launch_spec(18789, Some(&token), Path::new("/tmp/state"))
            .unwrap();
        assert!(spec.arguments().iter().all(|arg| !arg.contains("s3cr3t")));
        assert!(spec
            .secret_env_vars()
            .iter()
            .any(|(name, _)| name == GATEWAY_TOKEN_ENV));
        assert_eq!(
            spec.arguments(),
            [
                "/opt/openclaw.mjs",
                "gateway",
                "run",
                "--port",
                "18789",
                "--bind",
                "loopback",
                "--auth",
                "token",
                "--allow-unconfigured"
            ]
        );
        assert!(spec
            .env_vars()
            .iter()
            .any(|(name, value)| name == "OPENCLAW_NO_RESPAWN" && value == "1"));
    }

    #[test]
    fn l6_embedded_sim_runs_through_the_sim_subcommand() {
        let profile = LaunchProfile::EmbeddedSim {
            program: "/usr/bin/gatewarden".into(),
            extra_args: vec!["--ready-event".into()],
        };
        let spec = profile.launch_spec(5, None, Path::new("/tmp/s")).unwrap();
        assert_eq!(spec.arguments(), ["sim", "--port", "5", "--ready-event"]);
        let doctor = profile.doctor_spec(Path::new("/tmp/s")).unwrap();
        assert_eq!(
            doctor.arguments(),
            ["sim", "doctor", "--fix", "--yes", "--non-interactive"]
        );
    }

    #[test]
    fn f3_node_versions_are_checked_against_engines_node() {
        let range = ">=24.16.0 <25 || >=26.1.0";
        assert_eq!(version_satisfies("20.20.2", range), Some(false));
        assert_eq!(version_satisfies("v24.15.9", range), Some(false));
        assert_eq!(version_satisfies("24.16.0", range), Some(true));
        assert_eq!(version_satisfies("25.0.0", range), Some(false));
        assert_eq!(version_satisfies("26.0.5", range), Some(false));
        assert_eq!(version_satisfies("26.1.0", range), Some(true));
        assert_eq!(version_satisfies("24.17.0-nightly", range), Some(true));
        assert_eq!(version_satisfies("22.3.0", "^22.1"), Some(true));
        assert_eq!(version_satisfies("22.3.0", "~22.1"), Some(false));
        assert_eq!(version_satisfies("x", range), None);
        assert_eq!(version_satisfies("24.16.0", ">=banana"), None);
    }

    #[actix_rt::test]
    async fn f3_openclaw_profile_refuses_an_old_node_before_spawning() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("openclaw.mjs");
        std::fs::write(&entry, "").unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"engines": {"node": ">=24.16.0 <25 || >=26.1.0"}}"#,
        )
        .unwrap();
        let stub = dir.path().join("node");
        std::fs::write(&stub, "#!/bin/sh\necho v20.20.2\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let profile = LaunchProfile::OpenClaw {
            node: stub.clone(),
            entry,
        };
        let error = profile.check_runtime().await.unwrap_err();
        assert!(error.is_runtime_incompatible());
        let text = error.to_string();
        assert!(
            text.contains("Node 20.20.2") && text.contains(">=24.16.0"),
            "{text}"
        );
        std::fs::write(&stub, "#!/bin/sh\necho v24.16.0\n").unwrap();
        assert_eq!(profile.check_runtime().await, Ok(()));
    }

    #[test]
    fn o1_sim_profile_uses_its_own_port() {
        assert_ne!(LaunchProfile::sim().default_port(), OPENCLAW_DEFAULT_PORT);
    }

    #[test]
    fn l6_doctor_runs_fix_yes_non_interactive() {
        let profile = LaunchProfile::Custom {
            program: "/bin/gw".into(),
            args: vec!["--port".into(), "{port}".into()],
        };
        let doctor = profile.doctor_spec(Path::new("/tmp/s")).unwrap();
        assert_eq!(
            doctor.arguments(),
            ["doctor", "--fix", "--yes", "--non-interactive"]
        );
        let spec = profile
            .launch_spec(1234, None, Path::new("/tmp/s"))
            .unwrap();
        assert_eq!(spec.arguments(), ["--port", "1234"]);
    }

    /// An executable file named `name` in `dir` (never run: only found).
    fn executable(dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn sim_profile_runs_gatewarden_sim_from_an_installed_gatewarden_on_path() {
        let exe_dir = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let gatewarden = executable(bin.path(), "gatewarden");
        let found = search_simulator(
            None,
            Some(exe_dir.path().join("app")),
            Some(bin.path().as_os_str().to_owned()),
        );
        assert_eq!(found, Ok(SimProgram::Embedded(gatewarden.clone())));
        // What it runs: `gatewarden sim`, before the profile's `--port N ...`.
        let spec = found.unwrap().spec();
        assert_eq!(spec.program(), gatewarden.as_path());
        assert_eq!(spec.arguments(), ["sim"]);
    }

    #[test]
    fn sim_profile_prefers_the_standalone_sim_and_what_sits_next_to_the_executable() {
        let exe_dir = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        executable(bin.path(), "gatewarden-sim");
        let cli_next_to_exe = executable(exe_dir.path(), "gatewarden");
        let exe = Some(exe_dir.path().join("deps").join("app"));
        let path = Some(bin.path().as_os_str().to_owned());
        // Next to the executable (one folder up here) beats PATH, whatever the binary.
        assert_eq!(
            search_simulator(None, exe.clone(), path.clone()),
            Ok(SimProgram::Embedded(cli_next_to_exe))
        );
        let sim_next_to_exe = executable(exe_dir.path(), "gatewarden-sim");
        assert_eq!(
            search_simulator(None, exe, path),
            Ok(SimProgram::Standalone(sim_next_to_exe))
        );
    }

    #[test]
    fn sim_not_found_says_where_it_looked_and_how_to_build_or_install_it() {
        let empty = tempfile::tempdir().unwrap();
        // A file that is not executable is not a simulator.
        std::fs::write(empty.path().join("gatewarden-sim"), "").unwrap();
        let error = search_simulator(
            None,
            Some(empty.path().join("app")),
            Some(empty.path().as_os_str().to_owned()),
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, ProfileError::SimNotFound { .. }));
        assert!(
            message.contains(&empty.path().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("cargo build -p gatewarden-sim"),
            "{message}"
        );
        assert!(
            message.contains("cargo install --path crates/gatewarden-cli"),
            "{message}"
        );
        assert!(message.contains("GATEWARDEN_SIM_BIN"), "{message}");
    }

    #[test]
    fn sim_bin_variable_naming_a_missing_file_is_an_error_not_a_fallback() {
        let bin = tempfile::tempdir().unwrap();
        executable(bin.path(), "gatewarden-sim");
        let missing = bin.path().join("nope");
        let error = search_simulator(
            Some(missing.as_os_str().to_owned()),
            None,
            Some(bin.path().as_os_str().to_owned()),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("from GATEWARDEN_SIM_BIN"),
            "{error}"
        );
    }
}
