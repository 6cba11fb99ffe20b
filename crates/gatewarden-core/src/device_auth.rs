//! Device identity, the pure parts: ids, encodings, the strings to sign, the stored file (A1, A2).
//!
//! Key generation, PEM parsing and Ed25519 signing need a crypto library and happen in the actor
//! crate; the core only knows how the id is derived from the raw public key, which string gets
//! signed, and what the identity file looks like. Keeping the signed strings here means they are
//! tested against hand-written expectations without any key material.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::frame::REDACTED;

/// The only identity file version this supervisor writes and reads (A1).
pub const IDENTITY_FILE_VERSION: u32 = 1;

/// A1: device id = lowercase hex SHA-256 of the raw 32-byte Ed25519 public key.
pub fn device_id_from_public_key(raw: &[u8; 32]) -> String {
    let digest = Sha256::digest(raw);
    let mut id = String::with_capacity(64);
    for byte in digest {
        id.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        id.push(char::from_digit(u32::from(byte & 0x0f), 16).unwrap_or('0'));
    }
    id
}

/// A2: base64url without padding (public key and signature on the wire).
pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The fields of the device-auth payload string (A2, OPENCLAW.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignaturePayload<'a> {
    /// [`device_id_from_public_key`] of our key.
    pub device_id: &'a str,
    /// `client.id` as sent.
    pub client_id: &'a str,
    /// `client.mode` as sent.
    pub client_mode: &'a str,
    /// `role` as sent.
    pub role: &'a str,
    /// `scopes` exactly as sent (same order: the server joins what it receives).
    pub scopes: &'a [String],
    /// `device.signedAt`.
    pub signed_at_ms: u64,
    /// `auth.token` (or device token) as sent; `None` signs the empty string. A password is
    /// never signed.
    pub token: Option<&'a str>,
    /// The challenge nonce.
    pub nonce: Option<&'a str>,
    /// `client.platform` (v3 only).
    pub platform: Option<&'a str>,
    /// `client.deviceFamily` (v3 only).
    pub device_family: Option<&'a str>,
}

impl SignaturePayload<'_> {
    /// A2: `v2|deviceId|clientId|clientMode|role|scopes|signedAtMs|token|nonce`, or
    /// `v1|deviceId|clientId|clientMode|role|scopes|signedAtMs|token` when there is no nonce.
    pub fn v2(&self) -> String {
        let mut fields = self.common_fields();
        match self.nonce {
            Some(nonce) => {
                fields.push(nonce.to_string());
                format!("v2|{}", fields.join("|"))
            }
            None => format!("v1|{}", fields.join("|")),
        }
    }

    /// `v3|deviceId|clientId|clientMode|role|scopes|signedAt|token|nonce|platform|deviceFamily`,
    /// which current gateways try first. Platform and device family are trimmed and
    /// ASCII-lowercased, as the server normalises them before verifying; absent values (and an
    /// absent nonce) are empty.
    pub fn v3(&self) -> String {
        let mut fields = self.common_fields();
        fields.push(self.nonce.unwrap_or("").to_string());
        fields.push(normalize_metadata(self.platform));
        fields.push(normalize_metadata(self.device_family));
        format!("v3|{}", fields.join("|"))
    }

    fn common_fields(&self) -> Vec<String> {
        vec![
            self.device_id.to_string(),
            self.client_id.to_string(),
            self.client_mode.to_string(),
            self.role.to_string(),
            self.scopes.join(","),
            self.signed_at_ms.to_string(),
            self.token.unwrap_or("").to_string(),
        ]
    }
}

fn normalize_metadata(value: Option<&str>) -> String {
    value.unwrap_or("").trim().to_ascii_lowercase()
}

/// A1: the identity file `{version:1, deviceId, publicKeyPem, privateKeyPem, createdAtMs}`
/// (written with mode 0600 by the actor crate). `Debug` hides the private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredIdentity {
    /// File format version ([`IDENTITY_FILE_VERSION`]).
    pub version: u32,
    /// The device id as stored (checked against the key on load).
    pub device_id: String,
    /// The public key, PEM (SPKI).
    pub public_key_pem: String,
    /// The private key, PEM (PKCS#8). Secret.
    pub private_key_pem: String,
    /// When the identity was created (wall-clock epoch ms, for humans).
    pub created_at_ms: u64,
}

impl fmt::Debug for StoredIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredIdentity")
            .field("version", &self.version)
            .field("device_id", &self.device_id)
            .field("public_key_pem", &self.public_key_pem)
            .field("private_key_pem", &REDACTED)
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

/// Why an identity file cannot be used as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not JSON, or not the expected shape.
    #[error("identity file is not valid: {0}")]
    Malformed(String),
}

impl StoredIdentity {
    /// A version-1 identity.
    pub fn new(
        device_id: String,
        public_key_pem: String,
        private_key_pem: String,
        created_at_ms: u64,
    ) -> Self {
        StoredIdentity {
            version: IDENTITY_FILE_VERSION,
            device_id,
            public_key_pem,
            private_key_pem,
            created_at_ms,
        }
    }

    /// Parse the file's text. A1: an unreadable or invalid file is replaced by a new identity,
    /// so the caller treats any error as "create a new one".
    pub fn from_json(text: &str) -> Result<Self, IdentityError> {
        serde_json::from_str(text).map_err(|error| IdentityError::Malformed(error.to_string()))
    }

    /// The file's text (pretty-printed, as a human may open it).
    pub fn to_json(&self) -> String {
        serde_json::to_value(self)
            .map(|value| format!("{value:#}"))
            .unwrap_or_default()
    }
}

/// The verdict on a loaded identity, once the actor has parsed its keys and derived the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityCheck {
    /// Use it as it is.
    Valid,
    /// A1: the stored id does not match the key: use the key with the derived id, and rewrite
    /// the file with it.
    IdMismatch {
        /// The id derived from the key.
        derived_device_id: String,
    },
    /// A1: a file version we do not know, or empty keys: replace it with a new identity.
    Invalid,
}

/// A1: check a stored identity against the id derived from its public key.
pub fn check_stored_identity(stored: &StoredIdentity, derived_device_id: &str) -> IdentityCheck {
    if stored.version != IDENTITY_FILE_VERSION
        || stored.public_key_pem.trim().is_empty()
        || stored.private_key_pem.trim().is_empty()
    {
        return IdentityCheck::Invalid;
    }
    if stored.device_id == derived_device_id {
        IdentityCheck::Valid
    } else {
        IdentityCheck::IdMismatch {
            derived_device_id: derived_device_id.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes() -> Vec<String> {
        vec!["operator.admin".into(), "operator.read".into()]
    }

    fn payload<'a>(scopes: &'a [String], nonce: Option<&'a str>) -> SignaturePayload<'a> {
        SignaturePayload {
            device_id: "dev",
            client_id: "gateway-client",
            client_mode: "backend",
            role: "operator",
            scopes,
            signed_at_ms: 1_700_000_000_000,
            token: Some("tok"),
            nonce,
            platform: Some("  Linux "),
            device_family: None,
        }
    }

    #[test]
    fn a1_device_id_is_lowercase_hex_sha256_of_the_raw_key() {
        // SHA-256 of 32 zero bytes.
        assert_eq!(
            device_id_from_public_key(&[0u8; 32]),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn a2_base64url_has_no_padding() {
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(b"a"), "YQ");
    }

    #[test]
    fn a2_v2_payload_with_nonce() {
        let scopes = scopes();
        assert_eq!(
            payload(&scopes, Some("n-1")).v2(),
            "v2|dev|gateway-client|backend|operator|operator.admin,operator.read|1700000000000|tok|n-1"
        );
    }

    #[test]
    fn a2_v1_payload_without_nonce_and_empty_token() {
        let scopes = scopes();
        let mut payload = payload(&scopes, None);
        payload.token = None;
        assert_eq!(
            payload.v2(),
            "v1|dev|gateway-client|backend|operator|operator.admin,operator.read|1700000000000|"
        );
    }

    #[test]
    fn a2_v3_payload_normalizes_platform_and_family() {
        let scopes = scopes();
        let mut payload = payload(&scopes, Some("n-1"));
        assert_eq!(
            payload.v3(),
            "v3|dev|gateway-client|backend|operator|operator.admin,operator.read|1700000000000|tok|n-1|linux|"
        );
        payload.device_family = Some(" Desktop");
        payload.scopes = &[];
        assert!(payload
            .v3()
            .ends_with("|operator||1700000000000|tok|n-1|linux|desktop"));
    }

    #[test]
    fn a1_stored_identity_round_trips_in_camel_case() {
        let identity = StoredIdentity::new("id".into(), "PUB".into(), "PRIV".into(), 5);
        let json: serde_json::Value = serde_json::from_str(&identity.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1, "deviceId": "id", "publicKeyPem": "PUB",
                "privateKeyPem": "PRIV", "createdAtMs": 5
            })
        );
        assert_eq!(StoredIdentity::from_json(&identity.to_json()), Ok(identity));
        assert!(StoredIdentity::from_json("{not json").is_err());
        assert!(StoredIdentity::from_json(r#"{"version":1}"#).is_err());
    }

    #[test]
    fn a3_stored_identity_debug_hides_the_private_key() {
        let identity = StoredIdentity::new("id".into(), "PUB".into(), "PRIVATE-PEM".into(), 5);
        let shown = format!("{identity:?}");
        assert!(!shown.contains("PRIVATE-PEM"), "{shown}");
        assert!(shown.contains(REDACTED));
    }

    #[test]
    fn a1_check_corrects_a_mismatched_id_and_rejects_unknown_versions() {
        let identity = StoredIdentity::new("id".into(), "PUB".into(), "PRIV".into(), 5);
        assert_eq!(check_stored_identity(&identity, "id"), IdentityCheck::Valid);
        assert_eq!(
            check_stored_identity(&identity, "other"),
            IdentityCheck::IdMismatch {
                derived_device_id: "other".into()
            }
        );
        let future = StoredIdentity {
            version: 2,
            ..identity.clone()
        };
        assert_eq!(check_stored_identity(&future, "id"), IdentityCheck::Invalid);
        let empty = StoredIdentity {
            private_key_pem: " ".into(),
            ..identity
        };
        assert_eq!(check_stored_identity(&empty, "id"), IdentityCheck::Invalid);
    }
}
