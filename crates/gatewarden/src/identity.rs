//! The supervisor's device identity: an Ed25519 key kept in a private JSON file (A1, A2).
//!
//! The pure parts (device id, base64url, the signed strings, the file shape and the id check)
//! live in `gatewarden_core::device_auth`; this module adds what needs a crypto library and a
//! file system: key generation, PEM encoding, signing, and the careful file handling of A1.
//!
//! # File handling
//!
//! - The file is written to a temporary sibling created with mode 0600 and renamed over the
//!   target, so a crash never leaves a half-written key and the key is never readable by others,
//!   not even for a moment.
//! - The parent directory is created 0700. An existing directory that others may write to would
//!   let them swap the file for their own key, so a world- or group-writable directory is fixed
//!   (write bits for others removed) and a shared sticky directory such as `/tmp` is refused.
//! - A stored id that does not match the key is corrected and rewritten; a file that cannot be
//!   read or parsed is replaced by a new identity (the gateway pairs a fresh key silently on
//!   loopback, so replacing is cheaper than failing).
//! - The private key never appears in `Debug`, logs or errors.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use gatewarden_core::device_auth::{
    base64url, check_stored_identity, device_id_from_public_key, IdentityCheck, StoredIdentity,
};
use gatewarden_core::frame::REDACTED;
use rand::RngCore as _;

/// The mode of the identity file: owner read/write only (A1).
pub const IDENTITY_FILE_MODE: u32 = 0o600;

/// The mode of a directory this module creates for the identity file.
pub const IDENTITY_DIR_MODE: u32 = 0o700;

/// Why no identity could be loaded or created. None of these is fatal for a connection: the
/// caller connects without `device` (A1). No variant ever carries key material.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("create directory", "write", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The directory is writable by other users and cannot safely be made private (a shared
    /// sticky directory such as `/tmp`, or one whose mode we may not change).
    #[error(
        "refusing to keep the device key in {}: the directory is writable by other users; \
         use a private directory (mode 0700)",
        path.display()
    )]
    InsecureDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// The identity path has no parent directory or file name.
    #[error("identity path {} is not a file path", path.display())]
    BadPath {
        /// The path given.
        path: PathBuf,
    },
    /// The new key could not be encoded as PEM (does not happen with a valid key).
    #[error("cannot encode the device key as PEM")]
    Encode,
}

/// A1: the device key pair. `Debug` shows the device id only.
#[derive(Clone)]
pub struct DeviceIdentity {
    signing_key: SigningKey,
    device_id: String,
    created_at_ms: u64,
}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("device_id", &self.device_id)
            .field("signing_key", &REDACTED)
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

impl DeviceIdentity {
    /// A new random identity (the OS random source).
    pub fn generate(now_ms: u64) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let signing_key = SigningKey::from_bytes(&secret);
        // The seed bytes are copied into the key; do not leave a second copy on the stack.
        secret.fill(0);
        DeviceIdentity::from_signing_key(signing_key, now_ms)
    }

    /// An identity around an existing key.
    pub fn from_signing_key(signing_key: SigningKey, created_at_ms: u64) -> Self {
        let device_id = device_id_from_public_key(signing_key.verifying_key().as_bytes());
        DeviceIdentity {
            signing_key,
            device_id,
            created_at_ms,
        }
    }

    /// A1: lowercase hex SHA-256 of the raw public key.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// A2: the raw 32-byte public key, base64url without padding (`device.publicKey`).
    pub fn public_key_base64url(&self) -> String {
        base64url(self.signing_key.verifying_key().as_bytes())
    }

    /// The public half, for verification.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing_key.verifying_key()
    }

    /// When the identity was created (wall-clock epoch ms, as stored).
    pub fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }

    /// A2: the Ed25519 signature of `payload` (UTF-8), base64url without padding.
    pub fn sign(&self, payload: &str) -> String {
        base64url(&self.signing_key.sign(payload.as_bytes()).to_bytes())
    }

    /// The file form `{version:1, deviceId, publicKeyPem, privateKeyPem, createdAtMs}`.
    fn to_stored(&self) -> Result<StoredIdentity, IdentityError> {
        let public_key_pem = self
            .signing_key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| IdentityError::Encode)?;
        let private_key_pem = self
            .signing_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| IdentityError::Encode)?;
        Ok(StoredIdentity::new(
            self.device_id.clone(),
            public_key_pem,
            private_key_pem.to_string(),
            self.created_at_ms,
        ))
    }
}

/// What loading found, for the log line (never the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loaded {
    /// The stored identity is valid and was used as is.
    Valid,
    /// The stored id did not match the key: rewrite the file.
    IdCorrected,
}

/// A1: load the identity at `path`, or create and store a new one.
///
/// A stored id that does not match the key is corrected and the file rewritten; an unreadable
/// or invalid file is replaced by a new identity. Errors mean "no identity": the caller then
/// connects without `device`.
pub fn load_or_create(path: &Path, now_ms: u64) -> Result<DeviceIdentity, IdentityError> {
    let parent = match path.parent() {
        Some(parent) if path.file_name().is_some() => parent,
        _ => {
            return Err(IdentityError::BadPath {
                path: path.to_path_buf(),
            })
        }
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    secure_directory(parent)?;

    match read_stored(path) {
        Ok(Some((identity, Loaded::Valid))) => {
            // An older file may have been written with a looser mode; tighten it.
            tighten_file_mode(path)?;
            tracing::debug!(device_id = identity.device_id(), path = %path.display(), "device identity loaded");
            return Ok(identity);
        }
        Ok(Some((identity, Loaded::IdCorrected))) => {
            tracing::warn!(
                device_id = identity.device_id(),
                path = %path.display(),
                "stored device id did not match its key; corrected and rewritten"
            );
            write_atomically(path, &identity.to_stored()?.to_json())?;
            return Ok(identity);
        }
        Ok(None) => {}
        Err(reason) => {
            tracing::warn!(path = %path.display(), %reason, "device identity file unusable; replacing it with a new identity");
        }
    }

    let identity = DeviceIdentity::generate(now_ms);
    write_atomically(path, &identity.to_stored()?.to_json())?;
    tracing::info!(device_id = identity.device_id(), path = %path.display(), "device identity created");
    Ok(identity)
}

/// `Ok(None)` when there is no file; `Err(reason)` when it exists but cannot be used (the
/// reason names what is wrong, never the key material).
fn read_stored(path: &Path) -> Result<Option<(DeviceIdentity, Loaded)>, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("unreadable: {error}")),
    };
    // serde_json's messages name positions and expected types, not the content of strings.
    let stored = StoredIdentity::from_json(&text).map_err(|error| error.to_string())?;
    let signing_key = SigningKey::from_pkcs8_pem(&stored.private_key_pem)
        .map_err(|_| "private key is not a PKCS#8 Ed25519 PEM".to_string())?;
    // The public key is derived from the private one; a stored public key that disagrees
    // means the file was edited or mixed up, and the private key is the one that signs.
    if let Ok(stored_public) = VerifyingKey::from_public_key_pem(&stored.public_key_pem) {
        if stored_public != signing_key.verifying_key() {
            return Err("public key does not belong to the private key".to_string());
        }
    }
    let identity = DeviceIdentity::from_signing_key(signing_key, stored.created_at_ms);
    match check_stored_identity(&stored, identity.device_id()) {
        IdentityCheck::Valid => Ok(Some((identity, Loaded::Valid))),
        IdentityCheck::IdMismatch { .. } => Ok(Some((identity, Loaded::IdCorrected))),
        IdentityCheck::Invalid => Err("unknown version or empty keys".to_string()),
    }
}

/// A1: the directory exists, is private to its owner when we create it, and is never writable
/// by others.
fn secure_directory(dir: &Path) -> Result<(), IdentityError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(IDENTITY_DIR_MODE)
            .create(dir)
            .map_err(|source| IdentityError::Io {
                action: "create directory",
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let metadata = fs::metadata(dir).map_err(|source| IdentityError::Io {
        action: "inspect directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let mode = metadata.permissions().mode();
    if mode & 0o022 == 0 {
        return Ok(());
    }
    // A sticky shared directory (/tmp) belongs to everyone: changing it would break other
    // programs, so refuse instead of fixing.
    if mode & 0o1000 != 0 {
        return Err(IdentityError::InsecureDirectory {
            path: dir.to_path_buf(),
        });
    }
    let fixed = mode & 0o7755;
    fs::set_permissions(dir, fs::Permissions::from_mode(fixed)).map_err(|_| {
        IdentityError::InsecureDirectory {
            path: dir.to_path_buf(),
        }
    })?;
    tracing::warn!(
        path = %dir.display(),
        old_mode = format!("{:o}", mode & 0o7777),
        new_mode = format!("{:o}", fixed & 0o7777),
        "identity directory was writable by other users; removed their write permission"
    );
    Ok(())
}

fn tighten_file_mode(path: &Path) -> Result<(), IdentityError> {
    let metadata = fs::metadata(path).map_err(|source| IdentityError::Io {
        action: "inspect",
        path: path.to_path_buf(),
        source,
    })?;
    if metadata.permissions().mode() & 0o777 != IDENTITY_FILE_MODE {
        fs::set_permissions(path, fs::Permissions::from_mode(IDENTITY_FILE_MODE)).map_err(
            |source| IdentityError::Io {
                action: "set the mode of",
                path: path.to_path_buf(),
                source,
            },
        )?;
    }
    Ok(())
}

/// Write `text` to a 0600 temporary sibling, flush it to disk and rename it over `path`.
fn write_atomically(path: &Path, text: &str) -> Result<(), IdentityError> {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let io_error = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Io {
            action,
            path,
            source,
        }
    };
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(IDENTITY_FILE_MODE)
            .open(&temporary)
            .map_err(io_error("create", &temporary))?;
        // The umask can only remove bits, but make the mode exact regardless.
        file.set_permissions(fs::Permissions::from_mode(IDENTITY_FILE_MODE))
            .map_err(io_error("set the mode of", &temporary))?;
        file.write_all(text.as_bytes())
            .map_err(io_error("write", &temporary))?;
        file.sync_all().map_err(io_error("sync", &temporary))?;
        fs::rename(&temporary, path).map_err(io_error("rename into place", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a3_debug_hides_the_signing_key() {
        let identity = DeviceIdentity::generate(1);
        let shown = format!("{identity:?}");
        assert!(shown.contains(REDACTED), "{shown}");
        assert!(shown.contains(identity.device_id()), "{shown}");
        let secret = base64url(identity.signing_key.as_bytes());
        assert!(!shown.contains(&secret), "{shown}");
    }

    #[test]
    fn a1_pem_round_trip_keeps_the_key() {
        let identity = DeviceIdentity::generate(7);
        let stored = identity.to_stored().unwrap();
        let key = SigningKey::from_pkcs8_pem(&stored.private_key_pem).unwrap();
        assert_eq!(key.to_bytes(), identity.signing_key.to_bytes());
        assert!(stored
            .public_key_pem
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(stored.device_id, identity.device_id());
    }
}
