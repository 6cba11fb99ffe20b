//! The `connect` handshake as a pure function: schema, protocol range, shared secret, device signature, scopes.
//!
//! Nothing here touches sockets or clocks: the caller passes the challenge nonce, the current time
//! and a lookup for device tokens issued earlier, and gets back either the accepted session or the
//! exact error answer and close code the real gateway would send.

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::protocol::{self, close, code, RpcError};

/// `client.id` values the real gateway accepts.
pub const CLIENT_IDS: &[&str] = &[
    "cli",
    "gateway-client",
    "openclaw-tui",
    "openclaw-control-ui",
    "node-host",
    "openclaw-probe",
    "test",
];
/// `client.mode` values the real gateway accepts.
pub const CLIENT_MODES: &[&str] = &[
    "webchat", "cli", "ui", "backend", "node", "worker", "probe", "test",
];
/// Roles a connection may claim.
pub const ROLES: &[&str] = &["operator", "node", "worker"];

/// Server-side inputs that do not change per connection.
#[derive(Debug, Clone)]
pub struct ServerPolicy {
    /// Protocol this gateway speaks.
    pub protocol: u32,
    /// Configured shared token, if any.
    pub token: Option<String>,
    /// Configured shared password, if any.
    pub password: Option<String>,
    /// `--reject-token`: every presented secret is a mismatch.
    pub reject_token: bool,
    /// Inside the startup window: answer UNAVAILABLE.
    pub starting: bool,
    /// Draining for an in-process restart: answer UNAVAILABLE / `gateway-restarting`.
    pub restarting: bool,
}

/// A device that proved possession of its key.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedDevice {
    /// Lowercase hex SHA-256 of the raw public key.
    pub id: String,
    /// Which payload version verified (`v3` is tried first).
    pub payload_version: &'static str,
}

/// How the connection authenticated (`hello-ok.auth.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// No shared secret configured.
    None,
    /// Shared token matched.
    Token,
    /// Shared password matched.
    Password,
    /// A device token issued by an earlier connect matched.
    DeviceToken,
}

impl AuthMethod {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Token => "token",
            AuthMethod::Password => "password",
            AuthMethod::DeviceToken => "device-token",
        }
    }
}

/// A successful handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// Protocol reported in `hello-ok`.
    pub protocol: u32,
    /// `hello-ok.auth.method`.
    pub method: AuthMethod,
    /// Role (default `operator`).
    pub role: String,
    /// Granted scopes; may be narrower than requested.
    pub scopes: Vec<String>,
    /// The verified device, if one signed.
    pub device: Option<VerifiedDevice>,
    /// Whether to issue (silently pair) a device token for this device.
    pub issue_device_token: bool,
    /// `client.id`.
    pub client_id: String,
    /// `client.mode`.
    pub client_mode: String,
}

/// A rejected handshake: the `res` error and the close that follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Error answered to the connect request (boxed: rejections are rare and the error is large).
    pub error: Box<RpcError>,
    /// Close code sent afterwards.
    pub close_code: u16,
    /// Close reason sent afterwards.
    pub close_reason: String,
}

impl Rejected {
    fn policy(error: RpcError) -> Self {
        let close_reason = error.message.clone();
        Rejected {
            error: Box::new(error),
            close_code: close::POLICY_VIOLATION,
            close_reason,
        }
    }
}

/// Validates the first request (already known to be `connect`) and decides the session.
///
/// `device_token_scopes` returns the scopes paired with an issued device token.
pub fn evaluate_connect(
    params: Option<&Value>,
    policy: &ServerPolicy,
    nonce: &str,
    now_ms: i64,
    device_token_scopes: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<Accepted, Rejected> {
    let params = params.unwrap_or(&Value::Null);
    if let Err(problem) = validate_connect_schema(params) {
        return Err(Rejected::policy(RpcError::new(
            code::INVALID_REQUEST,
            format!("invalid connect params: {problem}"),
        )));
    }
    let params = params.as_object().expect("schema validated an object");

    if policy.restarting {
        // The real gateway's `rejectConnectForClosedAdmission` (dist/message-handler-*.mjs): any
        // schema-valid connect while the restart fence or drain holds admission closed, whatever
        // its credentials. `phase` is the host-suspension phase, which is `accepting` unless the
        // host is suspending (not modelled).
        let mut error = RpcError::new(
            code::UNAVAILABLE,
            "connect unavailable during gateway restart",
        )
        .with_details(json!({
            "method": "connect",
            "reason": "gateway-restarting",
            "phase": "accepting",
        }));
        error.retryable = Some(true);
        error.retry_after_ms = Some(1000);
        return Err(Rejected {
            error: Box::new(error),
            close_code: close::TRY_AGAIN_LATER,
            close_reason: "gateway restart in progress".into(),
        });
    }

    if policy.starting {
        let mut error = RpcError::new(code::UNAVAILABLE, "gateway starting; retry shortly")
            .with_details(json!({"reason": "startup-sidecars"}));
        error.retryable = Some(true);
        error.retry_after_ms = Some(500);
        return Err(Rejected {
            error: Box::new(error),
            close_code: close::TRY_AGAIN_LATER,
            close_reason: "gateway starting".into(),
        });
    }

    let client = params["client"]
        .as_object()
        .expect("schema validated client");
    let client_id = client["id"].as_str().unwrap_or_default().to_string();
    let client_mode = client["mode"].as_str().unwrap_or_default().to_string();
    let role = params
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("operator")
        .to_string();
    if !ROLES.contains(&role.as_str()) {
        return Err(Rejected::policy(RpcError::new(
            code::INVALID_REQUEST,
            "invalid role",
        )));
    }

    let protocol = negotiate_protocol(params, policy.protocol, &role, &client_mode)?;

    let auth = params.get("auth").and_then(Value::as_object);
    let auth_field = |name: &str| auth_text(auth, name);
    let has_device = params.get("device").is_some_and(Value::is_object);
    let method = authenticate(policy, auth, has_device, device_token_scopes)?;

    let requested: Vec<String> = params
        .get("scopes")
        .and_then(Value::as_array)
        .map(|scopes| {
            scopes
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();

    let device = match params.get("device").and_then(Value::as_object) {
        Some(device) => {
            // The signed token is the first of these present; the password is never signed.
            let signed_token = auth_field("token")
                .or_else(|| auth_field("deviceToken"))
                .or_else(|| auth_field("bootstrapToken"));
            let signing = SigningContext {
                client,
                role: &role,
                scopes: params.get("scopes").and_then(Value::as_array),
                token: signed_token.unwrap_or(""),
            };
            Some(verify_device(device, &signing, nonce, now_ms).map_err(Rejected::policy)?)
        }
        None => None,
    };

    let trusted_backend = client_id == "gateway-client" && client_mode == "backend";
    let local_cli = client_id == "cli" && client_mode == "cli";
    let shared_secret_ok = matches!(
        method,
        AuthMethod::Token | AuthMethod::Password | AuthMethod::None
    );
    let (scopes, issue_device_token) = match (&device, method) {
        // A signing trusted backend keeps its scopes but is not paired (no record, no device token).
        (Some(_), _) if trusted_backend && shared_secret_ok => (requested, false),
        // Any other valid device on loopback is silently auto-approved with what it asked for.
        (Some(_), _) => (requested, true),
        (None, AuthMethod::DeviceToken) => {
            let paired = auth_field("deviceToken")
                .or_else(|| auth_field("token"))
                .and_then(device_token_scopes);
            let paired = paired.unwrap_or_default();
            (
                requested
                    .into_iter()
                    .filter(|scope| paired.contains(scope))
                    .collect(),
                false,
            )
        }
        (None, _) if (trusted_backend || local_cli) && shared_secret_ok => (requested, false),
        (None, _) => (Vec::new(), false),
    };

    Ok(Accepted {
        protocol,
        method,
        role,
        scopes,
        device,
        issue_device_token,
        client_id,
        client_mode,
    })
}

fn negotiate_protocol(
    params: &Map<String, Value>,
    server: u32,
    role: &str,
    mode: &str,
) -> Result<u32, Rejected> {
    let min = params["minProtocol"].as_i64().unwrap_or_default();
    let max = params["maxProtocol"].as_i64().unwrap_or_default();
    let offers = |version: u32| min <= i64::from(version) && i64::from(version) <= max;
    if offers(server) {
        return Ok(server);
    }
    // A v3-only connect is still accepted for nodes and probes; the reply says the server's protocol.
    let legacy_allowed = (role == "node" && mode == "node") || mode == "probe";
    if server == protocol::CURRENT_PROTOCOL
        && legacy_allowed
        && offers(protocol::MINIMUM_PROBE_PROTOCOL)
    {
        return Ok(server);
    }
    let error = RpcError::new(code::INVALID_REQUEST, "protocol mismatch").with_details(json!({
        "code": "PROTOCOL_MISMATCH",
        "clientMinProtocol": min,
        "clientMaxProtocol": max,
        "expectedProtocol": server,
        "minimumProbeProtocol": protocol::MINIMUM_PROBE_PROTOCOL,
    }));
    Err(Rejected {
        error: Box::new(error),
        close_code: close::PROTOCOL_ERROR,
        close_reason: "protocol mismatch".into(),
    })
}

/// A non-empty string field of `auth`.
fn auth_text<'a>(auth: Option<&'a Map<String, Value>>, name: &str) -> Option<&'a str> {
    auth.and_then(|auth| auth.get(name))
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
}

fn authenticate(
    policy: &ServerPolicy,
    auth: Option<&Map<String, Value>>,
    has_device: bool,
    device_token_scopes: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<AuthMethod, Rejected> {
    let auth_field = |name: &str| auth_text(auth, name);
    // As the real gateway: with a signed device a device-token retry can still work.
    let mismatch = || {
        Rejected::policy(
            RpcError::new(
                code::INVALID_REQUEST,
                "unauthorized: gateway token mismatch (use this gateway's gateway.auth.token or pair the device)",
            )
            .with_details(json!({
                "code": "AUTH_TOKEN_MISMATCH",
                "authReason": "token_mismatch",
                "canRetryWithDeviceToken": has_device,
                "recommendedNextStep": if has_device {
                    "retry_with_device_token"
                } else {
                    "update_auth_credentials"
                },
            })),
        )
    };
    // A device token from an earlier pairing works in `auth.deviceToken` or in `auth.token`.
    let device_token = auth_field("deviceToken").or_else(|| auth_field("token"));
    if device_token.and_then(device_token_scopes).is_some() {
        if policy.reject_token {
            return Err(mismatch());
        }
        return Ok(AuthMethod::DeviceToken);
    }
    if policy.token.is_none() && policy.password.is_none() {
        return Ok(AuthMethod::None);
    }
    let Some(presented) = auth_field("token").or_else(|| auth_field("password")) else {
        return Err(Rejected::policy(
            RpcError::new(
                code::INVALID_REQUEST,
                "unauthorized: gateway token missing (use this gateway's gateway.auth.token or pair the device)",
            )
            .with_details(json!({
                "code": "AUTH_TOKEN_MISSING",
                "authReason": "token_missing",
                "canRetryWithDeviceToken": false,
                "recommendedNextStep": "update_auth_configuration",
            })),
        ));
    };
    if policy.reject_token {
        return Err(mismatch());
    }
    if policy
        .token
        .as_deref()
        .is_some_and(|token| constant_time_eq(token, presented))
    {
        return Ok(AuthMethod::Token);
    }
    if policy
        .password
        .as_deref()
        .is_some_and(|password| constant_time_eq(password, presented))
    {
        return Ok(AuthMethod::Password);
    }
    Err(mismatch())
}

/// Compares secrets without an early exit, so timing does not leak the matching prefix.
fn constant_time_eq(expected: &str, presented: &str) -> bool {
    let (expected, presented) = (expected.as_bytes(), presented.as_bytes());
    let mut difference = expected.len() ^ presented.len();
    for (index, byte) in presented.iter().enumerate() {
        difference |= usize::from(byte ^ expected.get(index).copied().unwrap_or(0));
    }
    difference == 0
}

/// The connect fields that go into the signed payload.
struct SigningContext<'a> {
    client: &'a Map<String, Value>,
    role: &'a str,
    scopes: Option<&'a Vec<Value>>,
    token: &'a str,
}

fn device_error(detail_code: &str, message: &str) -> RpcError {
    RpcError::new(code::INVALID_REQUEST, message).with_details(json!({"code": detail_code}))
}

fn verify_device(
    device: &Map<String, Value>,
    signing: &SigningContext<'_>,
    challenge_nonce: &str,
    now_ms: i64,
) -> Result<VerifiedDevice, RpcError> {
    let text = |name: &str| device.get(name).and_then(Value::as_str).unwrap_or("");
    let Some(public_key) = decode_public_key(text("publicKey")) else {
        return Err(device_error(
            "DEVICE_AUTH_PUBLIC_KEY_INVALID",
            "device public key invalid",
        ));
    };
    let derived_id = hex_sha256(public_key.as_bytes());
    if text("id") != derived_id {
        return Err(device_error(
            "DEVICE_AUTH_DEVICE_ID_MISMATCH",
            "device identity mismatch",
        ));
    }
    let signed_at = device
        .get("signedAt")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    if (now_ms - signed_at).abs() > protocol::DEVICE_SIGNATURE_SKEW_MS {
        return Err(device_error(
            "DEVICE_AUTH_SIGNATURE_EXPIRED",
            "device signature expired",
        ));
    }
    let nonce = text("nonce");
    if nonce.is_empty() {
        return Err(device_error(
            "DEVICE_AUTH_NONCE_REQUIRED",
            "device nonce required",
        ));
    }
    if nonce != challenge_nonce {
        return Err(device_error(
            "DEVICE_AUTH_NONCE_MISMATCH",
            "device nonce mismatch",
        ));
    }
    let invalid = || device_error("DEVICE_AUTH_SIGNATURE_INVALID", "device signature invalid");
    let signature_bytes = decode_base64_any(text("signature")).ok_or_else(invalid)?;
    let signature = Signature::from_slice(&signature_bytes).map_err(|_| invalid())?;

    let client_text = |name: &str| {
        signing
            .client
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let scopes = signing
        .scopes
        .map(|scopes| {
            scopes
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let v2 = format!(
        "v2|{derived_id}|{}|{}|{}|{scopes}|{signed_at}|{}|{nonce}",
        client_text("id"),
        client_text("mode"),
        signing.role,
        signing.token
    );
    let v3 = format!(
        "v3|{derived_id}|{}|{}|{}|{scopes}|{signed_at}|{}|{nonce}|{}|{}",
        client_text("id"),
        client_text("mode"),
        signing.role,
        signing.token,
        client_text("platform").trim().to_ascii_lowercase(),
        client_text("deviceFamily").trim().to_ascii_lowercase(),
    );
    if public_key.verify(v3.as_bytes(), &signature).is_ok() {
        return Ok(VerifiedDevice {
            id: derived_id,
            payload_version: "v3",
        });
    }
    if public_key.verify(v2.as_bytes(), &signature).is_ok() {
        return Ok(VerifiedDevice {
            id: derived_id,
            payload_version: "v2",
        });
    }
    Err(invalid())
}

/// Lowercase hex SHA-256, the device id derivation.
pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Ed25519 SPKI DER prefix: a PEM public key is this followed by the raw 32 bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Accepts unpadded base64url raw 32 bytes (the documented form) or a PEM SPKI key.
fn decode_public_key(text: &str) -> Option<VerifyingKey> {
    let raw = if text.contains("BEGIN PUBLIC KEY") {
        let body: String = text
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(body.trim()).ok()?;
        der.strip_prefix(&ED25519_SPKI_PREFIX[..])?.to_vec()
    } else {
        decode_base64_any(text)?
    };
    let raw: [u8; 32] = raw.try_into().ok()?;
    VerifyingKey::from_bytes(&raw).ok()
}

fn decode_base64_any(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() {
        return None;
    }
    URL_SAFE_NO_PAD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .or_else(|_| STANDARD.decode(text))
        .ok()
}

/// Validates `connect` params against the closed schema; the error text mimics the real AJV output.
pub fn validate_connect_schema(params: &Value) -> Result<(), String> {
    let root = expect_object(params, "root")?;
    closed(
        root,
        "root",
        &[
            "minProtocol",
            "maxProtocol",
            "client",
            "role",
            "scopes",
            "caps",
            "commands",
            "permissions",
            "pathEnv",
            "auth",
            "locale",
            "userAgent",
            "modelCatalog",
            "device",
        ],
        &["minProtocol", "maxProtocol", "client"],
    )?;
    expect_integer(&root["minProtocol"], "/minProtocol")?;
    expect_integer(&root["maxProtocol"], "/maxProtocol")?;

    let client = expect_object(&root["client"], "/client")?;
    closed(
        client,
        "/client",
        &[
            "id",
            "version",
            "platform",
            "mode",
            "displayName",
            "buildId",
            "deviceFamily",
            "modelIdentifier",
            "timeZone",
            "instanceId",
        ],
        &["id", "version", "platform", "mode"],
    )?;
    for (name, value) in client {
        expect_string(value, &format!("/client/{name}"))?;
    }
    expect_enum(&client["id"], "/client/id", CLIENT_IDS)?;
    expect_enum(&client["mode"], "/client/mode", CLIENT_MODES)?;
    if client
        .get("buildId")
        .and_then(Value::as_str)
        .is_some_and(|build| build.chars().count() > 96)
    {
        return Err("at /client/buildId: must NOT have more than 96 characters".to_string());
    }

    for name in ["role", "pathEnv", "locale", "userAgent"] {
        if let Some(value) = root.get(name) {
            expect_string(value, &format!("/{name}"))?;
        }
    }
    for name in ["scopes", "caps"] {
        if let Some(value) = root.get(name) {
            let Some(items) = value.as_array() else {
                return Err(format!("at /{name}: must be array"));
            };
            for (index, item) in items.iter().enumerate() {
                expect_string(item, &format!("/{name}/{index}"))?;
            }
        }
    }
    if let Some(auth) = root.get("auth") {
        let auth = expect_object(auth, "/auth")?;
        closed(
            auth,
            "/auth",
            &["token", "password", "deviceToken", "bootstrapToken"],
            &[],
        )?;
        for (name, value) in auth {
            expect_string(value, &format!("/auth/{name}"))?;
        }
    }
    if let Some(device) = root.get("device") {
        let device = expect_object(device, "/device")?;
        closed(
            device,
            "/device",
            &["id", "publicKey", "signature", "signedAt", "nonce"],
            &["id", "publicKey", "signature", "signedAt"],
        )?;
        for name in ["id", "publicKey", "signature", "nonce"] {
            if let Some(value) = device.get(name) {
                expect_string(value, &format!("/device/{name}"))?;
            }
        }
        expect_integer(&device["signedAt"], "/device/signedAt")?;
    }
    Ok(())
}

fn expect_object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("at {path}: must be object"))
}

fn expect_string(value: &Value, path: &str) -> Result<(), String> {
    if value.is_string() {
        Ok(())
    } else {
        Err(format!("at {path}: must be string"))
    }
}

fn expect_integer(value: &Value, path: &str) -> Result<(), String> {
    if value.is_i64() || value.is_u64() {
        Ok(())
    } else {
        Err(format!("at {path}: must be integer"))
    }
}

fn expect_enum(value: &Value, path: &str, allowed: &[&str]) -> Result<(), String> {
    match value.as_str() {
        Some(text) if allowed.contains(&text) => Ok(()),
        _ => Err(format!(
            "at {path}: must be equal to one of the allowed values"
        )),
    }
}

fn closed(
    object: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
    required: &[&str],
) -> Result<(), String> {
    if let Some(unexpected) = object.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(format!("at {path}: unexpected property '{unexpected}'"));
    }
    if let Some(missing) = required.iter().find(|name| !object.contains_key(**name)) {
        return Err(format!(
            "at {path}: must have required property '{missing}'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    const NONCE: &str = "3b1f6a9e-0000-4000-8000-000000000000";
    const NOW: i64 = 1_800_000_000_000;

    fn policy() -> ServerPolicy {
        ServerPolicy {
            protocol: 4,
            token: Some("secret".into()),
            password: None,
            reject_token: false,
            starting: false,
            restarting: false,
        }
    }

    fn base(client_id: &str, mode: &str) -> Value {
        json!({
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": client_id, "version": "1.0", "platform": "Linux ", "mode": mode, "deviceFamily": "Desktop"},
            "role": "operator", "scopes": ["operator.admin", "operator.read"],
            "auth": {"token": "secret"},
        })
    }

    fn signed(mut params: Value, version: &str, signed_at: i64) -> Value {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public = key.verifying_key().to_bytes();
        let id = hex_sha256(&public);
        let payload = match version {
            "v3" => format!("v3|{id}|test|test|operator|operator.admin,operator.read|{signed_at}|secret|{NONCE}|linux|desktop"),
            _ => format!("v2|{id}|test|test|operator|operator.admin,operator.read|{signed_at}|secret|{NONCE}"),
        };
        let signature = key.sign(payload.as_bytes());
        params["device"] = json!({
            "id": id,
            "publicKey": URL_SAFE_NO_PAD.encode(public),
            "signature": URL_SAFE_NO_PAD.encode(signature.to_bytes()),
            "signedAt": signed_at,
            "nonce": NONCE,
        });
        params
    }

    fn no_tokens(_: &str) -> Option<Vec<String>> {
        None
    }

    fn detail_code(rejected: &Rejected) -> String {
        rejected
            .error
            .details
            .as_ref()
            .and_then(|d| d["code"].as_str())
            .unwrap_or("")
            .to_string()
    }

    #[test]
    fn v3_and_v2_signatures_are_both_accepted_and_grant_requested_scopes() {
        for version in ["v3", "v2"] {
            let params = signed(base("test", "test"), version, NOW);
            let accepted =
                evaluate_connect(Some(&params), &policy(), NONCE, NOW, &no_tokens).unwrap();
            assert_eq!(accepted.device.unwrap().payload_version, version);
            assert_eq!(accepted.scopes, vec!["operator.admin", "operator.read"]);
            assert!(accepted.issue_device_token);
        }
    }

    #[test]
    fn scopes_are_empty_without_device_unless_backend_or_cli() {
        let accepted = evaluate_connect(
            Some(&base("test", "test")),
            &policy(),
            NONCE,
            NOW,
            &no_tokens,
        )
        .unwrap();
        assert!(accepted.scopes.is_empty());
        let backend = evaluate_connect(
            Some(&base("gateway-client", "backend")),
            &policy(),
            NONCE,
            NOW,
            &no_tokens,
        );
        assert_eq!(backend.unwrap().scopes.len(), 2);
    }

    #[test]
    fn a_valid_connect_during_a_restart_drain_is_refused_as_gateway_restarting() {
        let policy = ServerPolicy {
            restarting: true,
            ..policy()
        };
        // Even with the right token: admission is closed, credentials are not looked at.
        let mut params = base("cli", "cli");
        params["auth"] = json!({"token": "secret"});
        let rejected = evaluate_connect(Some(&params), &policy, "n", 0, &no_tokens).unwrap_err();
        assert_eq!(rejected.error.code, code::UNAVAILABLE);
        assert_eq!(
            rejected.error.message,
            "connect unavailable during gateway restart"
        );
        assert_eq!(rejected.error.retryable, Some(true));
        assert_eq!(rejected.error.retry_after_ms, Some(1000));
        assert_eq!(
            rejected.error.details,
            Some(
                json!({"method": "connect", "reason": "gateway-restarting", "phase": "accepting"})
            )
        );
        assert_eq!(
            (rejected.close_code, rejected.close_reason.as_str()),
            (1013, "gateway restart in progress")
        );
        // An invalid connect is still answered as invalid, as the real gateway does.
        let mut invalid = base("cli", "cli");
        invalid["foo"] = json!(1);
        let rejected = evaluate_connect(Some(&invalid), &policy, "n", 0, &no_tokens).unwrap_err();
        assert_eq!(rejected.error.code, code::INVALID_REQUEST);
    }

    #[test]
    fn skewed_signature_is_expired() {
        let params = signed(base("test", "test"), "v3", NOW - 120_001);
        let rejected =
            evaluate_connect(Some(&params), &policy(), NONCE, NOW, &no_tokens).unwrap_err();
        assert_eq!(detail_code(&rejected), "DEVICE_AUTH_SIGNATURE_EXPIRED");
    }

    #[test]
    fn unknown_root_property_reports_the_real_message() {
        let mut params = base("test", "test");
        params["foo"] = json!(1);
        let rejected =
            evaluate_connect(Some(&params), &policy(), NONCE, NOW, &no_tokens).unwrap_err();
        assert_eq!(
            rejected.error.message,
            "invalid connect params: at root: unexpected property 'foo'"
        );
        assert_eq!(rejected.close_code, 1008);
    }

    #[test]
    fn probe_mode_may_offer_only_protocol_3() {
        let mut params = base("openclaw-probe", "probe");
        params["minProtocol"] = json!(3);
        params["maxProtocol"] = json!(3);
        assert_eq!(
            evaluate_connect(Some(&params), &policy(), NONCE, NOW, &no_tokens)
                .unwrap()
                .protocol,
            4
        );
    }
}
