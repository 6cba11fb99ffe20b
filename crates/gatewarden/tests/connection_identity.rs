//! A1/A2: the device identity file and the signature the gateway verifies.

use std::os::unix::fs::PermissionsExt as _;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use gatewarden::identity::{load_or_create, DeviceIdentity, IdentityError};
use gatewarden_core::device_auth::{device_id_from_public_key, SignaturePayload, StoredIdentity};

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn stored(path: &std::path::Path) -> StoredIdentity {
    StoredIdentity::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a1_identity_created_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity").join("device.json");
    let first = load_or_create(&path, 1_000).unwrap();
    let second = load_or_create(&path, 2_000).unwrap();
    assert_eq!(first.device_id(), second.device_id());
    assert_eq!(first.public_key_base64url(), second.public_key_base64url());
    // The creation time is the first one: the file was not rewritten.
    assert_eq!(second.created_at_ms(), 1_000);
    let file = stored(&path);
    assert_eq!(file.version, 1);
    assert_eq!(file.device_id, first.device_id());
    assert!(file.private_key_pem.contains("PRIVATE KEY"));
    assert!(file.public_key_pem.contains("PUBLIC KEY"));
    // A1: deviceId = lowercase hex SHA-256 of the raw public key.
    assert_eq!(
        first.device_id(),
        device_id_from_public_key(first.verifying_key().as_bytes())
    );
    assert_eq!(first.device_id().len(), 64);
    assert!(first
        .device_id()
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
}

#[test]
fn a1_file_mode_is_0600_and_dir_not_world_writable() {
    let dir = tempfile::tempdir().unwrap();

    // A directory we create is private.
    let created = dir.path().join("fresh").join("device.json");
    load_or_create(&created, 1).unwrap();
    assert_eq!(mode_of(&created), 0o600);
    assert_eq!(mode_of(created.parent().unwrap()), 0o700);

    // An existing directory writable by others is fixed before the key goes in.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = shared.join("device.json");
    load_or_create(&path, 1).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(mode_of(&shared) & 0o022, 0, "mode {:o}", mode_of(&shared));

    // A file left with a loose mode is tightened on load.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    load_or_create(&path, 1).unwrap();
    assert_eq!(mode_of(&path), 0o600);

    // A shared sticky directory (like /tmp) is refused, not changed.
    let sticky = dir.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let refused = load_or_create(&sticky.join("device.json"), 1).unwrap_err();
    assert!(
        matches!(refused, IdentityError::InsecureDirectory { .. }),
        "{refused:?}"
    );
    assert_eq!(mode_of(&sticky), 0o1777);
    assert!(!sticky.join("device.json").exists());

    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&shared)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("device.json")]);
}

#[test]
fn a1_mismatched_device_id_is_corrected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.json");
    let original = load_or_create(&path, 5).unwrap();
    let mut file = stored(&path);
    file.device_id = "0".repeat(64);
    std::fs::write(&path, file.to_json()).unwrap();

    let loaded = load_or_create(&path, 9).unwrap();
    assert_eq!(
        loaded.device_id(),
        original.device_id(),
        "same key, derived id"
    );
    let rewritten = stored(&path);
    assert_eq!(rewritten.device_id, original.device_id());
    assert_eq!(rewritten.private_key_pem, file.private_key_pem, "key kept");
    assert_eq!(rewritten.created_at_ms, 5);
    assert_eq!(mode_of(&path), 0o600);
}

#[test]
fn a1_garbage_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.json");
    for garbage in [
        "not json at all".to_string(),
        r#"{"version":1}"#.to_string(),
        r#"{"version":1,"deviceId":"x","publicKeyPem":"nope","privateKeyPem":"nope","createdAtMs":1}"#
            .to_string(),
        StoredIdentity::new("x".into(), "PUB".into(), "PRIV".into(), 1)
            .to_json()
            .replace("\"version\": 1", "\"version\": 2"),
    ] {
        std::fs::write(&path, &garbage).unwrap();
        let identity = load_or_create(&path, 42).unwrap();
        let file = stored(&path);
        assert_eq!(file.device_id, identity.device_id(), "{garbage}");
        assert_eq!(file.created_at_ms, 42);
        // The replacement loads as it is.
        assert_eq!(
            load_or_create(&path, 43).unwrap().device_id(),
            identity.device_id()
        );
    }
}

#[test]
fn a2_signature_verifies_against_v3_payload() {
    let identity = DeviceIdentity::generate(1);
    let scopes = vec!["operator.admin".to_string(), "operator.read".to_string()];
    let payload = SignaturePayload {
        device_id: identity.device_id(),
        client_id: "gateway-client",
        client_mode: "backend",
        role: "operator",
        scopes: &scopes,
        signed_at_ms: 1_700_000_000_000,
        token: Some("tok"),
        nonce: Some("nonce-1"),
        platform: Some("linux"),
        device_family: None,
    }
    .v3();
    let signature = identity.sign(&payload);
    assert!(!signature.contains('='), "no padding: {signature}");
    assert!(!signature.contains('+') && !signature.contains('/'));

    // Verify the way the gateway does: raw key and signature from base64url.
    use base64::Engine as _;
    let decode = |text: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .unwrap()
    };
    let raw_key: [u8; 32] = decode(&identity.public_key_base64url()).try_into().unwrap();
    let key = VerifyingKey::from_bytes(&raw_key).unwrap();
    let raw_signature: [u8; 64] = decode(&signature).try_into().unwrap();
    let signature = Signature::from_bytes(&raw_signature);
    assert!(key.verify(payload.as_bytes(), &signature).is_ok());
    assert!(key.verify(b"v3|tampered", &signature).is_err());
}

#[test]
fn a3_identity_debug_and_errors_never_show_the_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.json");
    let identity = load_or_create(&path, 1).unwrap();
    let file = stored(&path);
    let key_body: String = file
        .private_key_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let shown = format!("{identity:?}");
    assert!(!shown.contains(&key_body), "{shown}");
    assert!(!format!("{file:?}").contains(&key_body));
}
