//! What to launch: program, arguments, working directory and environment of the gateway, with the
//! shared secret kept out of argv and out of every log line (A3).

use std::fmt;
use std::path::{Path, PathBuf};

/// The text shown in place of a secret.
pub const REDACTED: &str = "[redacted]";

/// Command-line options whose value is a secret: the value after them is shown as [`REDACTED`]
/// (A3; OpenClaw reads `--token`/`--password` and defaults both to environment variables).
pub const SECRET_OPTIONS: &[&str] = &["--token", "--password"];

/// The environment variable that carries the gateway token (OPENCLAW.md §1, §9). Passing the token
/// here instead of `--token` keeps it out of `ps` and `/proc/<pid>/cmdline`.
pub const GATEWAY_TOKEN_ENV: &str = "OPENCLAW_GATEWAY_TOKEN";

/// The environment variable that carries the gateway password (OPENCLAW.md §9).
pub const GATEWAY_PASSWORD_ENV: &str = "OPENCLAW_GATEWAY_PASSWORD";

/// Service-manager markers that make OpenClaw believe it runs under systemd or launchd.
///
/// With any of these present, SIGUSR2 turns into a *supervised restart*: the gateway writes a
/// handoff and exits 0, expecting the service manager to start it again (OPENCLAW.md §8). A
/// supervisor that itself runs under systemd inherits them, so profiles scrub them from the child
/// environment unless they want exactly that behaviour.
pub const SERVICE_MARKER_ENV: &[&str] = &[
    // systemd
    "INVOCATION_ID",
    "SYSTEMD_EXEC_PID",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "MANAGERPID",
    "OPENCLAW_SYSTEMD_UNIT",
    // launchd
    "LAUNCH_JOB_LABEL",
    "XPC_SERVICE_NAME",
    // OpenClaw's own markers; a profile that wants external mode sets it again explicitly
    "OPENCLAW_SERVICE_MARKER",
    "OPENCLAW_SERVICE_KIND",
    "OPENCLAW_SUPERVISOR_MODE",
];

/// A secret value (token, password). `Debug` and `Display` print [`REDACTED`], so a secret inside a
/// struct that is logged with `{:?}` does not leak; the value is read only with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Call sites are few and greppable on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Everything needed to start one gateway process.
///
/// Environment order: the child inherits the supervisor's environment, minus `env_remove`, then
/// `env` and `secret_env` are set (a name both removed and set ends up set).
#[derive(Clone)]
pub struct LaunchSpec {
    program: PathBuf,
    args: Vec<String>,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    secret_env: Vec<(String, Secret)>,
    port: Option<u16>,
}

impl LaunchSpec {
    /// A spec that runs `program` with no arguments in the supervisor's working directory.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        LaunchSpec {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            env_remove: Vec::new(),
            secret_env: Vec::new(),
            port: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the working directory. OpenClaw reads `.env` from its CWD (OPENCLAW.md §9), so profiles
    /// set it deliberately.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets one environment variable of the child.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Removes one inherited environment variable from the child.
    pub fn env_remove(mut self, name: impl Into<String>) -> Self {
        self.env_remove.push(name.into());
        self
    }

    /// Removes every [`SERVICE_MARKER_ENV`] variable from the child environment.
    pub fn scrub_service_markers(mut self) -> Self {
        self.env_remove
            .extend(SERVICE_MARKER_ENV.iter().map(|name| (*name).to_owned()));
        self
    }

    /// Sets a secret environment variable (A3: the token travels in the environment, never argv).
    pub fn secret_env(mut self, name: impl Into<String>, value: Secret) -> Self {
        self.secret_env.push((name.into(), value));
        self
    }

    /// Records the port the gateway is told to listen on, for the owned-gateway record (O1). It is
    /// metadata only: pass the port to the gateway itself with `--port`.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The program to run.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The arguments, unredacted. Never log these: use [`LaunchSpec::display_argv`].
    pub fn arguments(&self) -> &[String] {
        &self.args
    }

    /// The working directory, if set.
    pub fn working_dir(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// Variables set in the child environment (secrets excluded).
    pub fn env_vars(&self) -> &[(String, String)] {
        &self.env
    }

    /// Variables removed from the inherited environment.
    pub fn env_removed(&self) -> &[String] {
        &self.env_remove
    }

    /// Secret variables set in the child environment; their values print as [`REDACTED`].
    pub fn secret_env_vars(&self) -> &[(String, Secret)] {
        &self.secret_env
    }

    /// The port recorded with [`LaunchSpec::port`].
    pub fn recorded_port(&self) -> Option<u16> {
        self.port
    }

    /// Program and arguments as they may be shown or logged: the value after `--token` or
    /// `--password` (and the value of `--token=…`) replaced by [`REDACTED`] (A3).
    pub fn display_argv(&self) -> Vec<String> {
        let mut argv = Vec::with_capacity(self.args.len() + 1);
        argv.push(self.program.to_string_lossy().into_owned());
        argv.extend(self.args.iter().cloned());
        redact_argv(&argv)
    }
}

impl fmt::Debug for LaunchSpec {
    // Hand-written so that neither argv secrets nor secret environment values can reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret_names: Vec<&str> = self
            .secret_env
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        f.debug_struct("LaunchSpec")
            .field("argv", &self.display_argv())
            .field("cwd", &self.cwd)
            .field("env", &self.env)
            .field("env_remove", &self.env_remove)
            .field("secret_env", &secret_names)
            .field("port", &self.port)
            .finish()
    }
}

/// Replaces the value after every [`SECRET_OPTIONS`] entry (and the value of `--token=…` forms) with
/// [`REDACTED`]. Used for our own spawn arguments and for command lines read from `/proc`.
pub fn redact_argv<S: AsRef<str>>(argv: &[S]) -> Vec<String> {
    let mut shown = Vec::with_capacity(argv.len());
    let mut redact_next = false;
    for arg in argv {
        let arg = arg.as_ref();
        if redact_next {
            shown.push(REDACTED.to_owned());
            redact_next = false;
            continue;
        }
        if SECRET_OPTIONS.contains(&arg) {
            redact_next = true;
            shown.push(arg.to_owned());
            continue;
        }
        let inline = SECRET_OPTIONS.iter().find(|option| {
            arg.strip_prefix(**option)
                .is_some_and(|rest| rest.starts_with('='))
        });
        match inline {
            Some(option) => shown.push(format!("{option}={REDACTED}")),
            None => shown.push(arg.to_owned()),
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a3_redacts_separate_and_inline_values() {
        let shown = redact_argv(&["gw", "--token", "s1", "--password=s2", "--port", "1"]);
        assert_eq!(
            shown,
            [
                "gw",
                "--token",
                REDACTED,
                "--password=[redacted]",
                "--port",
                "1"
            ]
        );
    }

    #[test]
    fn a3_trailing_secret_option_is_kept_without_value() {
        assert_eq!(redact_argv(&["gw", "--token"]), ["gw", "--token"]);
    }

    #[test]
    fn a3_debug_of_spec_hides_secret_env() {
        let spec = LaunchSpec::new("gw")
            .args(["--token", "hunter2"])
            .secret_env(GATEWAY_TOKEN_ENV, Secret::new("s3cr3t"));
        let shown = format!("{spec:?} {:?} {}", Secret::new("x9"), Secret::new("x9"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("x9"), "{shown}");
        assert!(shown.contains(GATEWAY_TOKEN_ENV), "{shown}");
    }
}
