//! Webhook signing keys: an Ed25519 key that signs every delivery, the JWKS that publishes
//! its public half (and recently retired ones), and the secret behind callback tokens.
//!
//! With a directory the keys live in `<dir>/webhook-keys.json` (mode 0600, replaced
//! atomically) so receivers' cached JWKS and issued callback tokens survive restarts. Only the
//! active key's private half is stored: retired keys are kept as public keys, just long enough
//! for deliveries signed with them to fall out of the receivers' replay window.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The file that holds the keys inside the configured directory.
pub const KEY_FILE: &str = "webhook-keys.json";

/// How long a retired public key stays in the JWKS: well past the 5-minute replay window, so
/// every delivery signed with it can still be checked by a receiver that refetches the JWKS.
pub const RETIRED_KEY_TTL_SECS: u64 = 3600;

const FILE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("webhook keys: {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "webhook keys: {path} is damaged ({reason}); restore it from a backup (deleting it \
         creates new keys, which invalidates every callback token issued so far)"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error("webhook keys: no randomness from the operating system: {0}")]
    Random(String),
    #[error(
        "webhook keys: {0} keys were retired in the last hour, each still published for \
         receivers to verify deliveries with; try again later"
    )]
    TooManyRotations(usize),
}

/// Most retired keys published at once: rotations past it within the hour are refused (each
/// must stay published while deliveries signed with it may be verified, and the JWKS must not
/// grow without bound).
pub const MAX_RETIRED_KEYS: usize = 16;

/// The signing keys; shared by the HTTP face (JWKS) and the delivery workers (signing).
pub struct SigningKeys {
    file: Option<PathBuf>,
    token_secret: [u8; 32],
    state: RwLock<State>,
    /// Held across a whole rotation (build, persist, swap) so two rotations cannot lose a key.
    rotating: Mutex<()>,
}

struct State {
    active: SigningKey,
    active_kid: String,
    retired: Vec<RetiredKey>,
}

#[derive(Clone, Serialize, Deserialize)]
struct RetiredKey {
    kid: String,
    /// The base64url public key, as published in the JWKS.
    x: String,
    retired_at: u64,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    token_secret: String,
    active: ActiveKey,
    #[serde(default)]
    retired: Vec<RetiredKey>,
}

#[derive(Serialize, Deserialize)]
struct ActiveKey {
    /// Stored for people reading the file; checked against the seed on load.
    kid: String,
    seed: String,
}

impl SigningKeys {
    /// Loads the keys from `dir` (creating the directory and a fresh key file if there is
    /// none), or, without a directory, generates keys that live only as long as the process.
    pub fn open(dir: Option<&Path>) -> Result<SigningKeys, SigningError> {
        let Some(dir) = dir else {
            let state = State::from_key(SigningKey::from_bytes(&random32()?), Vec::new());
            return Ok(Self::new(None, random32()?, state));
        };
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let path = dir.join(KEY_FILE);
        match fs::read(&path) {
            Ok(raw) => {
                let (secret, state) = parse_file(&path, &raw)?;
                Ok(Self::new(Some(path), secret, state))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = Self::new(
                    Some(path),
                    random32()?,
                    State::from_key(SigningKey::from_bytes(&random32()?), Vec::new()),
                );
                keys.persist(&keys.state.read())?;
                Ok(keys)
            }
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    fn new(file: Option<PathBuf>, token_secret: [u8; 32], state: State) -> Self {
        SigningKeys {
            file,
            token_secret,
            state: RwLock::new(state),
            rotating: Mutex::new(()),
        }
    }

    /// The kid that signs deliveries now.
    pub fn active_kid(&self) -> String {
        self.state.read().active_kid.clone()
    }

    /// The JWKS document: the active key and the keys retired less than an hour before `now_unix`.
    pub fn jwks(&self, now_unix: u64) -> serde_json::Value {
        let state = self.state.read();
        let active_x = B64.encode(state.active.verifying_key().to_bytes());
        let mut keys = vec![jwk(&state.active_kid, &active_x)];
        keys.extend(
            state
                .retired
                .iter()
                .filter(|r| still_published(r, now_unix))
                .map(|r| jwk(&r.kid, &r.x)),
        );
        serde_json::json!({ "keys": keys })
    }

    /// Signs `<unix_ts>.<body>` with the active key; returns the whole `Webhook-Signature`
    /// header value.
    pub fn sign(&self, unix_ts: u64, body: &[u8]) -> String {
        let state = self.state.read();
        let sig = state.active.sign(&signed_message(unix_ts, body));
        format!(
            "t={unix_ts},kid={},ed25519={}",
            state.active_kid,
            B64.encode(sig.to_bytes())
        )
    }

    /// Replaces the active key with a new one; the old one stays published for an hour from
    /// `now_unix`. Persists before switching, so a failed write leaves the old key in use.
    pub fn rotate(&self, now_unix: u64) -> Result<String, SigningError> {
        let _rotating = self.rotating.lock();
        let next = {
            let state = self.state.read();
            let mut retired: Vec<RetiredKey> = state
                .retired
                .iter()
                .filter(|r| still_published(r, now_unix))
                .cloned()
                .collect();
            if retired.len() >= MAX_RETIRED_KEYS {
                return Err(SigningError::TooManyRotations(retired.len()));
            }
            retired.push(RetiredKey {
                kid: state.active_kid.clone(),
                x: B64.encode(state.active.verifying_key().to_bytes()),
                retired_at: now_unix,
            });
            State::from_key(SigningKey::from_bytes(&random32()?), retired)
        };
        self.persist(&next)?;
        let kid = next.active_kid.clone();
        *self.state.write() = next;
        Ok(kid)
    }

    /// The HMAC secret for callback tokens: unchanged by rotation and restarts, so tokens
    /// already handed to receivers stay valid.
    pub fn token_secret(&self) -> [u8; 32] {
        self.token_secret
    }

    /// Writes `state` to the key file (if any): temp file (0600), fsync, rename, fsync the dir.
    fn persist(&self, state: &State) -> Result<(), SigningError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let doc = KeyFile {
            version: FILE_VERSION,
            token_secret: B64.encode(self.token_secret),
            active: ActiveKey {
                kid: state.active_kid.clone(),
                seed: B64.encode(state.active.to_bytes()),
            },
            retired: state.retired.clone(),
        };
        let mut text = serde_json::to_vec_pretty(&doc).map_err(|e| SigningError::Io {
            action: "encode",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        text.push(b'\n');
        let tmp = path.with_extension("json.tmp");
        // A temp file left by a crash could carry looser permissions: start from scratch
        // (if it cannot be removed, `create_new` below reports it).
        let _ = fs::remove_file(&tmp);
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(&text).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
        }
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync directory", dir))?;
        }
        Ok(())
    }
}

impl State {
    fn from_key(active: SigningKey, retired: Vec<RetiredKey>) -> State {
        let active_kid = kid_for(&B64.encode(active.verifying_key().to_bytes()));
        State {
            active,
            active_kid,
            retired,
        }
    }
}

fn parse_file(path: &Path, raw: &[u8]) -> Result<([u8; 32], State), SigningError> {
    let damaged = |reason: String| SigningError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let doc: KeyFile = serde_json::from_slice(raw).map_err(|e| damaged(e.to_string()))?;
    if doc.version != FILE_VERSION {
        return Err(damaged(format!("unknown version {}", doc.version)));
    }
    let secret = decode32(&doc.token_secret).ok_or_else(|| damaged("bad token_secret".into()))?;
    let seed = decode32(&doc.active.seed).ok_or_else(|| damaged("bad active seed".into()))?;
    let state = State::from_key(SigningKey::from_bytes(&seed), doc.retired);
    if state.active_kid != doc.active.kid {
        return Err(damaged("active kid does not match its key".into()));
    }
    for r in &state.retired {
        let key_ok = decode32(&r.x).is_some_and(|x| VerifyingKey::from_bytes(&x).is_ok());
        if !key_ok || kid_for(&r.x) != r.kid {
            return Err(damaged(format!("retired key {} is not a valid key", r.kid)));
        }
    }
    Ok((secret, state))
}

fn still_published(r: &RetiredKey, now_unix: u64) -> bool {
    now_unix < r.retired_at.saturating_add(RETIRED_KEY_TTL_SECS)
}

fn jwk(kid: &str, x: &str) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA", "x": x,
    })
}

/// `ds_` + the RFC 7638 thumbprint: derived from the key, so stable and unique per key.
fn kid_for(x: &str) -> String {
    // RFC 7638: the required members, lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    format!("ds_{}", B64.encode(Sha256::digest(canonical.as_bytes())))
}

fn signed_message(unix_ts: u64, body: &[u8]) -> Vec<u8> {
    [unix_ts.to_string().as_bytes(), b".", body].concat()
}

fn random32() -> Result<[u8; 32], SigningError> {
    let mut buf = [0u8; 32];
    getrandom::getrandom(&mut buf).map_err(|e| SigningError::Random(e.to_string()))?;
    Ok(buf)
}

fn decode32(text: &str) -> Option<[u8; 32]> {
    B64.decode(text).ok()?.try_into().ok()
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SigningError {
    let path = path.to_path_buf();
    move |source| SigningError::Io {
        action,
        path,
        source,
    }
}

/// Checks a `Webhook-Signature` header against a JWKS, as a receiver would (minus the
/// timestamp freshness check, which needs a clock: receivers also reject `t` older than 5
/// minutes).
pub fn verify(jwks: &serde_json::Value, header: &str, body: &[u8]) -> bool {
    let (mut t, mut kid, mut sig) = (None, None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some(("kid", v)) => kid = Some(v),
            Some(("ed25519", v)) => sig = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(kid), Some(sig)) = (t, kid, sig) else {
        return false;
    };
    // Decimal digits only: `+5` or ` 5` would parse but are not what a signer writes.
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) || t.parse::<u64>().is_err() {
        return false;
    }
    let public = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == kid && k["kty"] == "OKP" && k["crv"] == "Ed25519")
        .and_then(|k| k["x"].as_str().and_then(decode32))
        .and_then(|x| VerifyingKey::from_bytes(&x).ok());
    let sig = B64
        .decode(sig)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok());
    let (Some(public), Some(sig)) = (public, sig) else {
        return false;
    };
    // The timestamp text as sent is what the signer signed.
    let msg = [t.as_bytes(), b".", body].concat();
    public
        .verify_strict(&msg, &Signature::from_bytes(&sig))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir; removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let pid = std::process::id();
            let dir = std::env::temp_dir().join(format!("riffle-signing-{tag}-{pid}"));
            let _ = fs::remove_dir_all(&dir); // left over from a crashed run
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn a_signature_verifies_through_the_jwks() {
        let keys = SigningKeys::open(None).unwrap();
        let body = br#"{"stream":"a"}"#;
        let header = keys.sign(NOW, body);
        let kid = keys.active_kid();
        assert!(kid.starts_with("ds_"), "{kid}");
        assert!(
            header.starts_with(&format!("t={NOW},kid={kid},ed25519=")),
            "{header}"
        );
        let jwks = keys.jwks(NOW);
        let x = jwks["keys"][0]["x"].clone();
        let want = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA", "x": x},
        ]});
        assert_eq!(jwks, want);
        assert!(verify(&jwks, &header, body));
    }

    #[test]
    fn a_tampered_body_timestamp_kid_or_signature_fails() {
        let keys = SigningKeys::open(None).unwrap();
        let jwks = keys.jwks(NOW);
        let body = b"{\"n\":1}";
        let header = keys.sign(NOW, body);
        assert!(!verify(&jwks, &header, b"{\"n\":2}"));
        let later = header.replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert!(!verify(&jwks, &later, body));
        let padded = header.replace(&format!("t={NOW}"), &format!("t=+{NOW}"));
        assert!(!verify(&jwks, &padded, body));
        let other_kid = header.replace(&keys.active_kid(), "ds_unknown");
        assert!(!verify(&jwks, &other_kid, body));
        let (head, sig) = header.rsplit_once('=').unwrap();
        let mut bytes = B64.decode(sig).unwrap();
        bytes[0] ^= 1;
        assert!(!verify(
            &jwks,
            &format!("{head}={}", B64.encode(bytes)),
            body
        ));
        assert!(!verify(&jwks, "t=1,kid=x", body));
        // Another server's JWKS does not verify this server's signature.
        let stranger = SigningKeys::open(None).unwrap().jwks(NOW);
        assert!(!verify(&stranger, &header, body));
    }

    #[test]
    fn persisted_keys_survive_reopening() {
        let dir = TempDir::new("reopen");
        let nested = dir.0.join("keys");
        let first = SigningKeys::open(Some(&nested)).unwrap();
        let header = first.sign(NOW, b"x");
        let mode = {
            use std::os::unix::fs::PermissionsExt as _;
            fs::metadata(nested.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(mode & 0o777, 0o600);
        let again = SigningKeys::open(Some(&nested)).unwrap();
        assert_eq!(again.active_kid(), first.active_kid());
        assert_eq!(again.token_secret(), first.token_secret());
        assert!(verify(&again.jwks(NOW), &header, b"x"));
        // Memory mode makes different keys every time.
        let a = SigningKeys::open(None).unwrap();
        let b = SigningKeys::open(None).unwrap();
        assert_ne!(a.active_kid(), b.active_kid());
        assert_ne!(a.token_secret(), b.token_secret());
    }

    #[test]
    fn a_rotated_key_stays_published_for_an_hour() {
        let dir = TempDir::new("rotate");
        let keys = SigningKeys::open(Some(&dir.0)).unwrap();
        let secret = keys.token_secret();
        let old = keys.active_kid();
        let old_header = keys.sign(NOW, b"b");
        let new = keys.rotate(NOW).unwrap();
        assert_ne!(new, old);
        assert_eq!(keys.active_kid(), new);
        assert_eq!(keys.token_secret(), secret);
        assert!(keys.sign(NOW, b"b").contains(&format!("kid={new},")));

        let kids = |jwks: serde_json::Value| -> Vec<String> {
            let keys = jwks["keys"].as_array().unwrap().clone();
            keys.iter()
                .map(|k| k["kid"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(kids(keys.jwks(NOW)), [new.clone(), old.clone()]);
        assert!(verify(&keys.jwks(NOW + 3599), &old_header, b"b"));
        assert_eq!(kids(keys.jwks(NOW + 3600)), std::slice::from_ref(&new));

        // The retired key and the secret survive a restart.
        let reopened = SigningKeys::open(Some(&dir.0)).unwrap();
        assert_eq!(kids(reopened.jwks(NOW + 10)), [new.clone(), old.clone()]);
        assert_eq!(reopened.token_secret(), secret);

        // A later rotation drops keys retired over an hour ago from the file too.
        let newest = reopened.rotate(NOW + 4000).unwrap();
        let text = fs::read_to_string(dir.0.join(KEY_FILE)).unwrap();
        assert!(!text.contains(&old), "{text}");
        assert!(text.contains(&new));
        let last = SigningKeys::open(Some(&dir.0)).unwrap();
        assert_eq!(last.active_kid(), newest);
        assert_eq!(kids(last.jwks(0)), [newest, new]);
    }

    #[test]
    fn rotations_past_the_published_limit_wait_for_the_hour() {
        let keys = SigningKeys::open(None).unwrap();
        for i in 0..MAX_RETIRED_KEYS as u64 {
            keys.rotate(NOW + i).unwrap();
        }
        let active = keys.active_kid();
        assert!(matches!(
            keys.rotate(NOW + 100),
            Err(SigningError::TooManyRotations(n)) if n == MAX_RETIRED_KEYS
        ));
        assert_eq!(
            keys.active_kid(),
            active,
            "a refused rotation changes nothing"
        );
        assert_eq!(
            keys.jwks(NOW + 100)["keys"].as_array().unwrap().len(),
            MAX_RETIRED_KEYS + 1
        );
        // An hour after the first retirements, room again.
        keys.rotate(NOW + 3600).unwrap();
    }

    #[test]
    fn a_damaged_key_file_is_an_error_and_left_alone() {
        let dir = TempDir::new("damaged");
        let keys = SigningKeys::open(Some(&dir.0)).unwrap();
        let path = dir.0.join(KEY_FILE);
        let good = fs::read_to_string(&path).unwrap();

        let kid = keys.active_kid();
        let cases = [
            "{not json".to_string(),
            String::new(),
            good.replace("\"version\": 1", "\"version\": 9"),
            good.replace(&kid, "ds_other"),
            good.replace("\"token_secret\": \"", "\"token_secret\": \"AA"),
        ];
        for bad in cases {
            fs::write(&path, &bad).unwrap();
            match SigningKeys::open(Some(&dir.0)) {
                Err(SigningError::Damaged { .. }) => {}
                Err(e) => panic!("{bad:?}: wrong error {e}"),
                Ok(_) => panic!("{bad:?}: opened"),
            }
            assert_eq!(fs::read_to_string(&path).unwrap(), bad);
        }
    }
}
