//! The layered configuration: a TOML file, then `GATEWARDEN_*` environment overrides, then flags.
//!
//! All three layers are merged into one `toml::Table` before anything is typed, and only then
//! deserialised into the core's `SupervisorConfig` (and [`CliConfig`] for the keys only the CLI
//! knows). Reusing the core's serde derive means there is one list of fields, one set of
//! defaults and one `deny_unknown_fields`; the price is that serde reports an error without the
//! key's path, so [`deserialize_located`] narrows the tree down to the offending key and the
//! message names it (`heartbeat.interval_ms`) together with where the value came from.
//!
//! Environment names: `GATEWARDEN_<SECTION>__<FIELD>` (e.g. `GATEWARDEN_HEARTBEAT__INTERVAL_MS=100`)
//! and `GATEWARDEN_<KEY>` for top-level keys (`GATEWARDEN_PORT`, `GATEWARDEN_PROFILE`, ...). Other
//! `GATEWARDEN_*` variables (`GATEWARDEN_TOKEN`, `GATEWARDEN_SIM_BIN`, `GATEWARDEN_OPENCLAW_HOME`)
//! are not config keys and are left alone.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use gatewarden::profile::{OPENCLAW_DEFAULT_PORT, SIM_DEFAULT_PORT};
use gatewarden_core::config::SupervisorConfig;

use crate::cli::RunArgs;
use crate::UsageError;

/// The prefix of environment overrides.
const ENV_PREFIX: &str = "GATEWARDEN_";

/// Top-level keys only the CLI knows (everything else belongs to `SupervisorConfig`).
const CLI_KEYS: &[&str] = &[
    "profile",
    "command",
    "openclaw",
    "node",
    "state_dir",
    "control",
    "http",
    "http_allow_remote",
    "token_file",
    "event_queue",
    "control_plane",
];

/// Which gateway to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileKind {
    /// The bundled simulator.
    #[default]
    Sim,
    /// The real OpenClaw gateway.
    Openclaw,
    /// `command`.
    Custom,
}

impl ProfileKind {
    /// The spelling in config files and status output.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Sim => "sim",
            ProfileKind::Openclaw => "openclaw",
            ProfileKind::Custom => "custom",
        }
    }
}

/// The keys only the CLI knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CliConfig {
    /// `sim`, `openclaw` or `custom`.
    pub profile: ProfileKind,
    /// The custom profile's command and arguments (`{port}` is replaced by the port).
    pub command: Vec<String>,
    /// OpenClaw entry point (`openclaw.mjs`).
    pub openclaw: Option<PathBuf>,
    /// Node.js binary for the OpenClaw profile.
    pub node: Option<PathBuf>,
    /// Supervisor state directory.
    pub state_dir: Option<PathBuf>,
    /// Control socket path.
    pub control: Option<PathBuf>,
    /// Address of the HTTP endpoint.
    pub http: Option<String>,
    /// Allow the HTTP endpoint on a non-loopback address.
    pub http_allow_remote: bool,
    /// File holding the gateway token.
    pub token_file: Option<PathBuf>,
    /// Y1: how many events each control-socket subscriber may fall behind before it loses the
    /// oldest and reads a `lagged` line (default 1024, the library's `DEFAULT_EVENT_CAPACITY`).
    pub event_queue: Option<usize>,
    /// Q1: budgets and timeouts of the control socket and the HTTP endpoint.
    pub control_plane: ControlPlaneConfig,
}

/// Q1: the control socket's and the HTTP endpoint's budgets and timeouts, so that commands and
/// probes are never starved by RPCs, idle clients or slow senders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// A control client must send its whole request line within this time, else it gets an
    /// error and is disconnected.
    pub request_timeout_ms: u64,
    /// A control client must take its answer within this time (a client that never reads costs
    /// a connection slot for no longer).
    pub write_timeout_ms: u64,
    /// Control connections open at once (reading, waiting or answering); more are closed at once.
    pub max_connections: usize,
    /// `status`, `start`, `stop`, `restart`, `reload` running at once; more get a `busy` error.
    pub max_commands: usize,
    /// `rpc` requests running at once; more get a `busy` error. Separate from the commands' budget,
    /// so slow RPCs never delay a `status` or a `stop`.
    pub max_rpcs: usize,
    /// An HTTP client must send its request head within this time.
    pub http_header_timeout_ms: u64,
    /// HTTP connections open at once; more are closed at once.
    pub http_max_connections: usize,
    /// How often the status snapshot that `/healthz` and `/readyz` answer from is refreshed
    /// (besides every status event).
    pub snapshot_refresh_ms: u64,
    /// `/healthz` is 503 once the snapshot is older than this: the supervisor stopped answering.
    pub snapshot_stale_ms: u64,
    /// Y1: how long an exiting instance waits for its event subscribers to take their last lines
    /// and the `end` line (a subscriber that stopped reading is not waited for longer).
    pub stream_end_grace_ms: u64,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            request_timeout_ms: 2_000,
            write_timeout_ms: 5_000,
            max_connections: 256,
            max_commands: 16,
            max_rpcs: 32,
            http_header_timeout_ms: 2_000,
            http_max_connections: 256,
            snapshot_refresh_ms: 1_000,
            snapshot_stale_ms: 10_000,
            stream_end_grace_ms: 2_000,
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Every number of BEHAVIOUR.md.
    pub core: SupervisorConfig,
    /// The CLI's own keys.
    pub cli: CliConfig,
    /// The HTTP endpoint address, parsed and checked.
    pub http: Option<SocketAddr>,
    /// Where each key set outside the file came from (`heartbeat.interval_ms` → `GATEWARDEN_...`).
    pub origins: BTreeMap<String, String>,
}

impl Settings {
    /// The state directory: configured, else `$XDG_STATE_HOME/gatewarden/<port>`.
    pub fn state_dir(&self) -> PathBuf {
        self.cli
            .state_dir
            .clone()
            .unwrap_or_else(|| crate::launch::default_state_dir(self.core.port))
    }

    /// The control socket: configured, else derived from the port.
    pub fn control_path(&self) -> PathBuf {
        self.cli.control.clone().unwrap_or_else(|| {
            crate::launch::default_control_path(self.core.port, &self.state_dir())
        })
    }
}

/// The merged, still untyped configuration tree and where its values came from.
struct Layers {
    tree: Table,
    origins: BTreeMap<String, String>,
    file_origin: Option<String>,
}

impl Layers {
    fn set(&mut self, path: &[String], value: Value, origin: String) -> Result<(), UsageError> {
        let Some((last, parents)) = path.split_last() else {
            return Ok(());
        };
        let mut table = &mut self.tree;
        for (depth, key) in parents.iter().enumerate() {
            let entry = table
                .entry(key.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            table = entry.as_table_mut().ok_or_else(|| {
                UsageError(format!(
                    "config key `{}` (from {origin}) is not a section",
                    parents[..=depth].join(".")
                ))
            })?;
        }
        table.insert(last.clone(), value);
        self.origins.insert(path.join("."), origin);
        Ok(())
    }

    fn origin_of(&self, key: &str) -> String {
        // The most specific origin known: the key itself, else its section, else the file.
        let section = key.split('.').next().unwrap_or(key);
        self.origins
            .get(key)
            .or_else(|| self.origins.get(section))
            .cloned()
            .or_else(|| self.file_origin.clone())
            .unwrap_or_else(|| "defaults".to_string())
    }
}

/// Resolve the effective configuration from the process environment.
pub fn resolve(args: &RunArgs) -> anyhow::Result<Settings> {
    resolve_from(args, std::env::vars_os())
}

/// Resolve the effective configuration from `args` and the given environment.
pub fn resolve_from(
    args: &RunArgs,
    environment: impl IntoIterator<Item = (OsString, OsString)>,
) -> anyhow::Result<Settings> {
    let file = match &args.target.config {
        Some(path) => Some((read_file(path)?, format!("config file {}", path.display()))),
        None => None,
    };
    resolve_layers(file, args, environment)
}

/// Resolve the effective configuration from a config file's text (as if `--config` named a file
/// holding it), `args` and the given environment. The fuzz target's way in: no file system.
pub fn resolve_from_text(
    text: &str,
    args: &RunArgs,
    environment: impl IntoIterator<Item = (OsString, OsString)>,
) -> anyhow::Result<Settings> {
    let tree = text
        .parse::<Table>()
        .map_err(|error| UsageError(format!("config text: {error}")))?;
    resolve_layers(Some((tree, "config text".to_string())), args, environment)
}

/// The layers on top of an already parsed file (its tree and how to name it).
fn resolve_layers(
    file: Option<(Table, String)>,
    args: &RunArgs,
    environment: impl IntoIterator<Item = (OsString, OsString)>,
) -> anyhow::Result<Settings> {
    let mut layers = Layers {
        tree: Table::new(),
        origins: BTreeMap::new(),
        file_origin: None,
    };
    if let Some((tree, origin)) = file {
        layers.tree = tree;
        layers.file_origin = Some(origin);
    }
    apply_environment(&mut layers, environment)?;
    apply_flags(&mut layers, args)?;

    let mut core_tree = layers.tree.clone();
    let mut cli_tree = Table::new();
    for key in CLI_KEYS {
        if let Some(value) = core_tree.remove(*key) {
            cli_tree.insert((*key).to_string(), value);
        }
    }
    let mut cli: CliConfig = deserialize_located(&cli_tree, &layers)?;
    if !cli.command.is_empty()
        && !layers.origins.contains_key("profile")
        && !cli_tree.contains_key("profile")
    {
        // `run -- CMD` without `--profile` means the custom profile.
        cli.profile = ProfileKind::Custom;
    }
    match (cli.profile, cli.command.is_empty()) {
        (ProfileKind::Custom, true) => {
            return Err(UsageError(
                "the custom profile needs a command: gatewarden run -- CMD ARGS... (or `command = [...]` in the config file)"
                    .into(),
            )
            .into())
        }
        (ProfileKind::Sim | ProfileKind::Openclaw, false) => {
            return Err(UsageError(format!(
                "a command after `--` runs the custom profile, but the profile is `{}` (from {})",
                cli.profile.as_str(),
                layers.origin_of("profile")
            ))
            .into())
        }
        _ => {}
    }
    if !core_tree.contains_key("port") {
        // Each profile has its own default port; the sim's is not the real gateway's (O1).
        let port = match cli.profile {
            ProfileKind::Sim => SIM_DEFAULT_PORT,
            _ => OPENCLAW_DEFAULT_PORT,
        };
        core_tree.insert("port".into(), Value::Integer(i64::from(port)));
    }
    let core: SupervisorConfig = deserialize_located(&core_tree, &layers)?;
    // Q3: values that parse but cannot work are usage errors naming the key and its origin.
    if let Err(invalid) = core.validate() {
        return Err(UsageError(format!(
            "{}: {} (from {})",
            invalid.key,
            invalid.message,
            layers.origin_of(invalid.key)
        ))
        .into());
    }
    let http = match &cli.http {
        None => None,
        Some(text) => Some(parse_http_address(
            text,
            cli.http_allow_remote,
            &layers.origin_of("http"),
        )?),
    };
    Ok(Settings {
        core,
        cli,
        http,
        origins: layers.origins,
    })
}

/// Q3: the most a config or token file may hold. Both are a few KiB; the bound keeps
/// `--config /dev/zero` (or a log file named by mistake) from growing the supervisor without end.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Q3: reads a config or token file of at most [`MAX_FILE_BYTES`]. Missing, unreadable, too
/// large or not UTF-8: a usage error naming the file.
pub fn read_bounded(path: &Path, what: &str) -> Result<String, UsageError> {
    use std::io::Read as _;
    let fail = |why: String| UsageError(format!("cannot read {what} {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|error| fail(error.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| fail(error.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".to_string()))
}

fn read_file(path: &Path) -> anyhow::Result<Table> {
    let text = read_bounded(path, "config file")?;
    // A syntax error keeps toml's own message: it shows the line and column.
    text.parse::<Table>()
        .map_err(|error| UsageError(format!("config file {}: {error}", path.display())).into())
}

fn apply_environment(
    layers: &mut Layers,
    environment: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<(), UsageError> {
    let core_keys = core_top_level_keys();
    let mut overrides: Vec<(String, String)> = Vec::new();
    for (name, value) in environment {
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = rest.to_ascii_lowercase();
        let is_override =
            key.contains("__") || CLI_KEYS.contains(&key.as_str()) || core_keys.contains(&key);
        if !is_override {
            // Q3: a misspelled override must not be ignored in silence.
            if !is_known_variable(name) {
                return Err(UsageError(format!(
                    "unknown environment variable {name}; did you mean {}?",
                    nearest_variable(name)
                )));
            }
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| UsageError(format!("environment variable {name} is not valid UTF-8")))?;
        overrides.push((name.to_string(), value));
    }
    // A stable order, so the same environment always gives the same error first.
    overrides.sort();
    for (name, raw) in overrides {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(UsageError(format!(
                "environment variable {name}: expected GATEWARDEN_<SECTION>__<FIELD>"
            )));
        }
        let value = env_value(&path, &raw);
        layers.set(&path, value, format!("environment variable {name}"))?;
    }
    Ok(())
}

/// `GATEWARDEN_*` variables that are not config overrides but are read by gatewarden, its
/// simulator or its test and bench harnesses (and so may be set in a developer's shell).
const OTHER_VARIABLES: &[&str] = &[
    "GATEWARDEN_TOKEN",
    "GATEWARDEN_SIM_BIN",
    "GATEWARDEN_OPENCLAW_HOME",
    "GATEWARDEN_OPENCLAW_NODE",
    "GATEWARDEN_OPENCLAW_ENTRY",
    "GATEWARDEN_REQUIRE_OPENCLAW",
    "GATEWARDEN_STATE_MARKER",
    "GATEWARDEN_SOAK_SEED",
    "GATEWARDEN_SOAK_LOG",
    "GATEWARDEN_MODEL_CASES",
    "GATEWARDEN_MODEL_TOLERATE",
    "GATEWARDEN_TEST_PDEATH_PID_FILE",
];

/// Prefixes of the test harnesses' own variables (one per test token).
const OTHER_PREFIXES: &[&str] = &["GATEWARDEN_CONN_TEST_TOKEN_"];

fn is_known_variable(name: &str) -> bool {
    OTHER_VARIABLES.contains(&name) || OTHER_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// Every variable name gatewarden knows: the other variables, and one override per config key
/// (`GATEWARDEN_PORT`, `GATEWARDEN_HEARTBEAT__INTERVAL_MS`, ...), read off the defaults' shape.
fn known_variables() -> Vec<String> {
    let mut names: Vec<String> = OTHER_VARIABLES
        .iter()
        .map(|name| (*name).to_string())
        .collect();
    let add_tree = |table: &Table, names: &mut Vec<String>| {
        for (key, value) in table {
            match value {
                Value::Table(section) => {
                    for field in section.keys() {
                        names.push(format!(
                            "{ENV_PREFIX}{}__{}",
                            key.to_ascii_uppercase(),
                            field.to_ascii_uppercase()
                        ));
                    }
                }
                _ => names.push(format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())),
            }
        }
    };
    if let Ok(Value::Table(core)) = Value::try_from(SupervisorConfig::default()) {
        add_tree(&core, &mut names);
    }
    if let Ok(Value::Table(cli)) = Value::try_from(CliConfig::default()) {
        add_tree(&cli, &mut names);
    }
    for key in CLI_KEYS {
        names.push(format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()));
    }
    names.sort();
    names.dedup();
    names
}

/// The known variable closest to `name` (Levenshtein distance).
fn nearest_variable(name: &str) -> String {
    known_variables()
        .into_iter()
        .min_by_key(|known| edit_distance(name, known))
        .unwrap_or_else(|| "GATEWARDEN_<SECTION>__<FIELD>".to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// An environment value: paths and addresses stay text; anything else is read as a TOML value
/// when it is one (`100`, `true`, `0.5`, `[1, 2]`), so numbers reach serde as numbers.
fn env_value(path: &[String], raw: &str) -> Value {
    let text_keys = [
        "openclaw",
        "node",
        "state_dir",
        "control",
        "http",
        "token_file",
        "profile",
    ];
    if path.len() == 1 && text_keys.contains(&path[0].as_str()) {
        return Value::String(raw.to_string());
    }
    let parsed = format!("value = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut table| table.remove("value"));
    match parsed {
        Some(value) => value,
        // `command` as plain words: `GATEWARDEN_COMMAND="/bin/gw --port {port}"`.
        None if path == ["command"] => Value::Array(
            raw.split_whitespace()
                .map(|word| Value::String(word.to_string()))
                .collect(),
        ),
        None => Value::String(raw.to_string()),
    }
}

fn apply_flags(layers: &mut Layers, args: &RunArgs) -> Result<(), UsageError> {
    let path_text = |path: &Path| Value::String(path.to_string_lossy().into_owned());
    let mut flags: Vec<(&str, &str, Value)> = Vec::new();
    if let Some(port) = args.target.port {
        flags.push(("port", "--port", Value::Integer(i64::from(port))));
    }
    if let Some(dir) = &args.target.state_dir {
        flags.push(("state_dir", "--state-dir", path_text(dir)));
    }
    if let Some(control) = &args.target.control {
        flags.push(("control", "--control", path_text(control)));
    }
    if let Some(profile) = args.profile {
        flags.push((
            "profile",
            "--profile",
            Value::String(profile.as_str().into()),
        ));
    }
    if let Some(openclaw) = &args.openclaw {
        flags.push(("openclaw", "--openclaw", path_text(openclaw)));
    }
    if let Some(node) = &args.node {
        flags.push(("node", "--node", path_text(node)));
    }
    if let Some(file) = &args.token_file {
        flags.push(("token_file", "--token-file", path_text(file)));
    }
    if let Some(http) = &args.http {
        flags.push(("http", "--http", Value::String(http.clone())));
    }
    if args.http_allow_remote {
        flags.push((
            "http_allow_remote",
            "--http-allow-remote",
            Value::Boolean(true),
        ));
    }
    if !args.command.is_empty() {
        let words = args.command.iter().cloned().map(Value::String).collect();
        flags.push(("command", "the command after --", Value::Array(words)));
    }
    for (key, flag, value) in flags {
        let origin = if flag.starts_with("--") {
            format!("flag {flag}")
        } else {
            flag.to_string()
        };
        layers.set(&[key.to_string()], value, origin)?;
    }
    Ok(())
}

/// The names of the core's top-level scalar keys (`port`, `platform`), read off its serde shape
/// so a new field needs no change here.
fn core_top_level_keys() -> Vec<String> {
    match Value::try_from(SupervisorConfig::default()) {
        Ok(Value::Table(table)) => table
            .into_iter()
            .filter(|(_, value)| !value.is_table())
            .map(|(key, _)| key)
            .collect(),
        _ => vec!["port".into(), "platform".into()],
    }
}

/// Deserialise `tree`; on error, find the key that causes it and name it.
fn deserialize_located<T: DeserializeOwned>(
    tree: &Table,
    layers: &Layers,
) -> Result<T, UsageError> {
    let whole = match Value::Table(tree.clone()).try_into::<T>() {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    // Every field has a default, so a tree holding only one key fails only when that key is bad.
    for (key, value) in tree {
        let single = Table::from_iter([(key.clone(), value.clone())]);
        let Err(error) = Value::Table(single).try_into::<T>() else {
            continue;
        };
        if let Value::Table(section) = value {
            for (field, field_value) in section {
                let inner = Table::from_iter([(field.clone(), field_value.clone())]);
                let single = Table::from_iter([(key.clone(), Value::Table(inner))]);
                if let Err(error) = Value::Table(single).try_into::<T>() {
                    let path = format!("{key}.{field}");
                    return Err(key_error(&path, error.message(), layers));
                }
            }
        }
        return Err(key_error(key, error.message(), layers));
    }
    Err(UsageError(format!(
        "invalid configuration: {}",
        whole.message()
    )))
}

fn key_error(path: &str, message: &str, layers: &Layers) -> UsageError {
    UsageError(format!(
        "config key `{path}` (from {}): {message}",
        layers.origin_of(path)
    ))
}

fn parse_http_address(
    text: &str,
    allow_remote: bool,
    origin: &str,
) -> Result<SocketAddr, UsageError> {
    let address: SocketAddr = text.parse().map_err(|_| {
        UsageError(format!(
            "config key `http` (from {origin}): `{text}` is not an address like 127.0.0.1:9100"
        ))
    })?;
    if !address.ip().is_loopback() && !allow_remote {
        return Err(UsageError(format!(
            "config key `http` (from {origin}): {address} is not a loopback address; \
             pass --http-allow-remote to serve health and metrics to other hosts"
        )));
    }
    Ok(address)
}

/// `gatewarden config print`: the effective configuration as TOML, secrets redacted.
pub fn render(settings: &Settings, token: &crate::launch::TokenSummary) -> anyhow::Result<String> {
    let mut top = Table::new();
    let text = |path: &Path| Value::String(path.to_string_lossy().into_owned());
    top.insert(
        "profile".into(),
        Value::String(settings.cli.profile.as_str().into()),
    );
    if !settings.cli.command.is_empty() {
        let words = settings
            .cli
            .command
            .iter()
            .cloned()
            .map(Value::String)
            .collect();
        top.insert("command".into(), Value::Array(words));
    }
    if let Some(path) = &settings.cli.openclaw {
        top.insert("openclaw".into(), text(path));
    }
    if let Some(path) = &settings.cli.node {
        top.insert("node".into(), text(path));
    }
    top.insert("state_dir".into(), text(&settings.state_dir()));
    top.insert("control".into(), text(&settings.control_path()));
    if let Some(address) = settings.http {
        top.insert("http".into(), Value::String(address.to_string()));
    }
    top.insert(
        "http_allow_remote".into(),
        Value::Boolean(settings.cli.http_allow_remote),
    );
    if let Some(path) = &settings.cli.token_file {
        top.insert("token_file".into(), text(path));
    }
    top.insert(
        "event_queue".into(),
        Value::Integer(
            settings
                .cli
                .event_queue
                .unwrap_or(gatewarden::supervisor::DEFAULT_EVENT_CAPACITY)
                .try_into()
                .unwrap_or(i64::MAX),
        ),
    );
    let core = Value::try_from(&settings.core).context("cannot render the core configuration")?;
    let mut out =
        String::from("# gatewarden effective configuration (file < environment < flags)\n");
    out.push_str(&format!("# token: {}\n", token.describe()));
    for (key, origin) in &settings.origins {
        out.push_str(&format!("# {key}: from {origin}\n"));
    }
    out.push_str(&toml::to_string(&top).context("cannot render the configuration")?);
    if let Value::Table(core) = core {
        out.push_str(&toml::to_string(&core).context("cannot render the core configuration")?);
    }
    // A table of its own, after every top-level key (TOML would put later keys inside it).
    let mut control_plane = Table::new();
    control_plane.insert(
        "control_plane".into(),
        Value::try_from(&settings.cli.control_plane)
            .context("cannot render the control plane configuration")?,
    );
    out.push_str(
        &toml::to_string(&control_plane)
            .context("cannot render the control plane configuration")?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::TargetArgs;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value)))
            .collect()
    }

    fn args_with_file(text: &str) -> (tempfile::TempDir, RunArgs) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatewarden.toml");
        std::fs::write(&path, text).unwrap();
        let args = RunArgs {
            target: TargetArgs {
                config: Some(path),
                ..TargetArgs::default()
            },
            ..RunArgs::default()
        };
        (dir, args)
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file() {
        let (_dir, mut args) =
            args_with_file("port = 1000\n[heartbeat]\ninterval_ms = 111\ntimeout_ms = 5\n");
        args.target.port = Some(3000);
        let settings = resolve_from(
            &args,
            env(&[
                ("GATEWARDEN_PORT", "2000"),
                ("GATEWARDEN_HEARTBEAT__INTERVAL_MS", "222"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.core.port, 3000);
        assert_eq!(settings.core.heartbeat.interval_ms, 222);
        assert_eq!(settings.core.heartbeat.timeout_ms, 5);
        assert_eq!(settings.core.heartbeat.max_misses, 3);
    }

    #[test]
    fn the_profile_decides_the_default_port() {
        let sim = resolve_from(&RunArgs::default(), env(&[])).unwrap();
        assert_eq!(sim.core.port, SIM_DEFAULT_PORT);
        let openclaw = resolve_from(
            &RunArgs::default(),
            env(&[("GATEWARDEN_PROFILE", "openclaw")]),
        )
        .unwrap();
        assert_eq!(openclaw.core.port, OPENCLAW_DEFAULT_PORT);
    }

    #[test]
    fn unknown_key_in_a_section_is_named_with_its_path() {
        let (_dir, args) = args_with_file("[heartbeat]\nintervall_ms = 5\n");
        let error = resolve_from(&args, env(&[])).unwrap_err().to_string();
        assert!(error.contains("`heartbeat.intervall_ms`"), "{error}");
        assert!(error.contains("unknown field"), "{error}");
    }

    #[test]
    fn wrong_type_from_the_environment_names_key_and_variable() {
        let error = resolve_from(
            &RunArgs::default(),
            env(&[("GATEWARDEN_RECONNECT__MAX_ATTEMPTS", "many")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("`reconnect.max_attempts`"), "{error}");
        assert!(
            error.contains("GATEWARDEN_RECONNECT__MAX_ATTEMPTS"),
            "{error}"
        );
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let (_dir, args) = args_with_file("prot = 1\n");
        let error = resolve_from(&args, env(&[])).unwrap_err().to_string();
        assert!(error.contains("`prot`"), "{error}");
    }

    #[test]
    fn enum_values_and_cli_keys_come_from_the_environment() {
        let settings = resolve_from(
            &RunArgs::default(),
            env(&[
                ("GATEWARDEN_RELOAD__SIGNAL", "SIGHUP"),
                ("GATEWARDEN_STATE_DIR", "/tmp/gw-state"),
                ("GATEWARDEN_SIM_BIN", "/not/a/config/key"),
                ("GATEWARDEN_TOKEN", "not-a-config-key"),
            ]),
        )
        .unwrap();
        assert_eq!(
            settings.core.reload.signal,
            gatewarden_core::config::ReloadSignal::Sighup
        );
        assert_eq!(settings.state_dir(), PathBuf::from("/tmp/gw-state"));
    }

    #[test]
    fn a_command_without_profile_is_the_custom_profile() {
        let args = RunArgs {
            command: vec!["/bin/gw".into(), "--port".into(), "{port}".into()],
            ..RunArgs::default()
        };
        let settings = resolve_from(&args, env(&[])).unwrap();
        assert_eq!(settings.cli.profile, ProfileKind::Custom);
    }

    #[test]
    fn http_must_be_loopback_unless_allowed() {
        let mut args = RunArgs {
            http: Some("0.0.0.0:9100".into()),
            ..RunArgs::default()
        };
        let error = resolve_from(&args, env(&[])).unwrap_err().to_string();
        assert!(error.contains("loopback"), "{error}");
        args.http_allow_remote = true;
        assert!(resolve_from(&args, env(&[])).is_ok());
    }
}
