//! JWT gatekeeper tokens: an application's gatekeeper endpoint hands a client a short-lived
//! token for exactly the streams and topics it may use, and Riffle checks it. Signed with
//! HS256 (a shared secret), or RS256 / ES256 / EdDSA (public keys from a PEM or JWKS file);
//! `exp` is required, `nbf`, `iss` and `aud` are checked. A claim (default `grants`) lists
//! what the token grants:
//!
//! ```json
//! { "exp": 1767225600,
//!   "grants": [ { "prefix": "chat/room-1/", "scopes": "read+write" },
//!               { "name": "orders", "scopes": ["read"] } ] }
//! ```
//!
//! Each grant has a `prefix` (every name starting with it; `""` is every name) or a `name`
//! (exactly that one), and `scopes` as in API keys (`read|r`, `write|w`, `rw`,
//! `delete|d`, `admin|a`; a `+`-separated string or an array). Names are stream paths
//! (without `/v1/stream/`) and topic names, as in API key prefixes.

use super::auth::{Credential, Grant, Names, Scopes, digest};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::sync::Arc;

/// How a JWT was configured (the `auth.jwt_*` keys).
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    pub hs256_secret: String,
    pub public_key_file: String,
    pub jwks_file: String,
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: u64,
    pub claim: String,
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

/// The verifier of gatekeeper tokens.
pub struct Jwt {
    keys: Vec<Key>,
    claim: String,
    leeway_secs: u64,
    /// Tokens verified already, by digest: a client sends the same token with every request,
    /// and an RSA verification costs tens of microseconds. Bounded; emptied when full.
    verified: parking_lot::Mutex<std::collections::HashMap<[u8; 32], Credential>>,
}

/// Verified tokens remembered at most.
const VERIFIED_MAX: usize = 10_000;

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Jwt({} keys)", self.keys.len())
    }
}

/// Why a token was refused (the reason in metrics; the message in the 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a JWT at all, or not one of ours (unknown `kid`, algorithm).
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    /// Wrong `iss` or `aud`, or claims that are missing or not well formed.
    InvalidClaims,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::InvalidClaims => "invalid_claims",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Malformed => "the token is not a JWT this server accepts",
            Refusal::BadSignature => "the token's signature does not verify",
            Refusal::Expired => "the token has expired",
            Refusal::NotYetValid => "the token is not valid yet (nbf)",
            Refusal::InvalidClaims => {
                "the token's claims are not accepted: exp and grants are required, and iss and aud \
                 must match the server's settings when set"
            }
        }
    }
}

const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: [Algorithm; 2] = [Algorithm::ES256, Algorithm::ES384];

impl Jwt {
    /// The verifier the settings describe (`None`: no JWT configured). Errors name the key
    /// and file, never the secret.
    pub fn from_settings(s: &JwtSettings) -> Result<Option<Jwt>, String> {
        let mut keys = Vec::new();
        let validation = |algs: &[Algorithm]| {
            let mut v = Validation::new(algs[0]);
            v.algorithms = algs.to_vec();
            v.leeway = s.leeway_secs;
            v.validate_nbf = true;
            let mut required = vec!["exp"];
            if s.issuer.is_empty() {
                v.iss = None;
            } else {
                v.set_issuer(&[s.issuer.as_str()]);
                required.push("iss");
            }
            if s.audience.is_empty() {
                // An `aud` in the token is not checked against nothing.
                v.validate_aud = false;
            } else {
                v.set_audience(&[s.audience.as_str()]);
                required.push("aud");
            }
            v.set_required_spec_claims(&required);
            v
        };
        if !s.hs256_secret.is_empty() {
            if s.hs256_secret.len() < 32 {
                return Err("auth.jwt_hs256_secret must be at least 32 bytes".into());
            }
            let key = DecodingKey::from_secret(s.hs256_secret.as_bytes())
                .map_err(|e| format!("auth.jwt_hs256_secret: {e}"))?;
            keys.push(Key {
                kid: None,
                key,
                validation: validation(&[Algorithm::HS256]),
            });
        }
        if !s.public_key_file.is_empty() {
            let pem = std::fs::read(&s.public_key_file)
                .map_err(|e| format!("auth.jwt_public_key_file {:?}: {e}", s.public_key_file))?;
            let (key, algs): (DecodingKey, &[Algorithm]) = if let Ok(k) =
                DecodingKey::from_rsa_pem(&pem)
            {
                (k, &RSA)
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                (k, &EC)
            } else if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
                (k, &[Algorithm::EdDSA])
            } else {
                return Err(format!(
                    "auth.jwt_public_key_file {:?}: not an RSA, EC or Ed25519 public key in PEM",
                    s.public_key_file
                ));
            };
            keys.push(Key {
                kid: None,
                key,
                validation: validation(algs),
            });
        }
        if !s.jwks_file.is_empty() {
            let bad = |why: String| format!("auth.jwt_jwks_file {:?}: {why}", s.jwks_file);
            let text = std::fs::read(&s.jwks_file).map_err(|e| bad(e.to_string()))?;
            let set: JwkSet = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
            for (i, jwk) in set.keys.iter().enumerate() {
                let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key {i}: {e}")))?;
                let declared = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| Algorithm::try_from(a).ok());
                let algs: Vec<Algorithm> = match (declared, &jwk.algorithm) {
                    (Some(a), _) => vec![a],
                    (None, AlgorithmParameters::RSA(_)) => RSA.to_vec(),
                    (None, AlgorithmParameters::EllipticCurve(_)) => EC.to_vec(),
                    (None, AlgorithmParameters::OctetKeyPair(_)) => vec![Algorithm::EdDSA],
                    (None, AlgorithmParameters::OctetKey(_)) => vec![Algorithm::HS256],
                    (None, _) => return Err(bad(format!("key {i}: unsupported key type"))),
                };
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    key,
                    validation: validation(&algs),
                });
            }
            if set.keys.is_empty() {
                return Err(bad("it holds no keys".into()));
            }
        }
        if keys.is_empty() {
            if !s.issuer.is_empty() || !s.audience.is_empty() {
                return Err(
                    "auth.jwt_issuer/jwt_audience are set but no JWT key is: set \
                            auth.jwt_hs256_secret, jwt_public_key_file or jwt_jwks_file"
                        .into(),
                );
            }
            return Ok(None);
        }
        let claim = if s.claim.is_empty() {
            "grants".to_string()
        } else {
            s.claim.clone()
        };
        Ok(Some(Jwt {
            keys,
            claim,
            leeway_secs: s.leeway_secs,
            verified: Default::default(),
        }))
    }

    /// Whether `token` has the shape of a JWT (three base64url parts), so that an API key
    /// miss is not reported as a bad JWT.
    pub fn looks_like(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// The credential `token` carries, or why it is refused.
    pub fn check(&self, token: &str) -> Result<Credential, Refusal> {
        let id = digest(token);
        let remembered = self.verified.lock().get(&id).cloned();
        let fresh = remembered.is_none();
        let cred = match remembered {
            Some(c) => c,
            None => self.verify(token, id)?,
        };
        // RFC 7519: not accepted on or after `exp` (the library accepts its very second, when
        // live responses already end); a remembered token is held to it on every use.
        if let Some(exp) = cred.expires_at
            && exp.saturating_add(self.leeway_secs) <= jsonwebtoken::get_current_timestamp()
        {
            return Err(Refusal::Expired);
        }
        if fresh {
            let mut verified = self.verified.lock();
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
            verified.insert(id, cred.clone());
        }
        Ok(cred)
    }

    fn verify(&self, token: &str, id: [u8; 32]) -> Result<Credential, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        let mut refusal = Refusal::Malformed;
        for k in &self.keys {
            if k.kid.is_some() && header.kid.is_some() && k.kid != header.kid {
                continue;
            }
            if !k.validation.algorithms.contains(&header.alg) {
                continue;
            }
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(
                token,
                &k.key,
                &k.validation,
            ) {
                Ok(data) => return self.credential(id, &data.claims),
                Err(e) => {
                    refusal = match e.kind() {
                        ErrorKind::InvalidSignature => Refusal::BadSignature,
                        ErrorKind::ExpiredSignature => Refusal::Expired,
                        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
                        ErrorKind::InvalidIssuer
                        | ErrorKind::InvalidAudience
                        | ErrorKind::MissingRequiredClaim(_)
                        | ErrorKind::InvalidClaimFormat(_) => Refusal::InvalidClaims,
                        _ => Refusal::Malformed,
                    };
                    // A signature that verified under this key makes its verdict final.
                    if refusal != Refusal::BadSignature {
                        return Err(refusal);
                    }
                }
            }
        }
        Err(refusal)
    }

    fn credential(
        &self,
        id: [u8; 32],
        claims: &serde_json::Map<String, Value>,
    ) -> Result<Credential, Refusal> {
        let grants = claims
            .get(&self.claim)
            .and_then(parse_grants)
            .ok_or(Refusal::InvalidClaims)?;
        let expires_at = claims
            .get("exp")
            .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f.max(0.0) as u64)));
        Ok(Credential {
            scopes: grants.iter().fold(Scopes::NONE, |s, g| s.with(g.scopes)),
            grants: Some(Arc::from(grants)),
            id,
            expires_at,
        })
    }
}

/// The grants claim: a list of `{prefix|name, scopes}`; `None` if anything is malformed.
fn parse_grants(v: &Value) -> Option<Vec<Grant>> {
    v.as_array()?
        .iter()
        .map(|g| {
            let g = g.as_object()?;
            let names = match (g.get("prefix"), g.get("name")) {
                (Some(Value::String(p)), None) => Names::prefix(p)?,
                (None, Some(Value::String(n))) if !n.is_empty() => Names::exact(n)?,
                _ => return None,
            };
            let scopes = match g.get("scopes")? {
                Value::String(s) if !s.is_empty() => Scopes::parse(s)?,
                Value::Array(list) if !list.is_empty() => {
                    list.iter().try_fold(Scopes::NONE, |acc, s| {
                        Some(acc.with(Scopes::parse(s.as_str().filter(|s| !s.is_empty())?)?))
                    })?
                }
                _ => return None,
            };
            Some(Grant { names, scopes })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(settings: JwtSettings) -> Jwt {
        Jwt::from_settings(&JwtSettings {
            hs256_secret: SECRET.into(),
            ..settings
        })
        .unwrap()
        .unwrap()
    }

    fn token(claims: Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn grants_by_prefix_and_name() {
        let jwt = hs(JwtSettings::default());
        let t = token(json!({ "exp": now() + 60, "grants": [
            { "prefix": "chat/", "scopes": "rw" },
            { "name": "orders", "scopes": ["read", "delete"] } ] }));
        let c = jwt.check(&t).unwrap();
        assert!(c.allows("chat/1", Scopes::READ.with(Scopes::WRITE)));
        assert!(!c.allows("chat/1", Scopes::DELETE));
        assert!(c.allows("orders", Scopes::DELETE) && !c.allows("orders2", Scopes::READ));
        assert!(
            !c.allows_prefix("orders", Scopes::READ) && c.allows_prefix("chat/x", Scopes::READ)
        );
        assert_eq!(c.expires_at, Some(now() + 60));
        assert!(c.scopes.contains(Scopes::DELETE) && !c.scopes.contains(Scopes::ADMIN));
    }

    #[test]
    fn refusals() {
        let jwt = hs(JwtSettings {
            issuer: "gate".into(),
            audience: "riffle".into(),
            ..Default::default()
        });
        let ok = json!({ "exp": now() + 60, "iss": "gate", "aud": "riffle",
            "grants": [{ "prefix": "", "scopes": "r" }] });
        assert!(jwt.check(&token(ok.clone())).is_ok());
        let with = |k: &str, v: Value| {
            let mut c = ok.clone();
            c[k] = v;
            jwt.check(&token(c)).unwrap_err()
        };
        assert_eq!(with("exp", json!(now() - 5)), Refusal::Expired);
        assert_eq!(with("nbf", json!(now() + 100)), Refusal::NotYetValid);
        assert_eq!(with("iss", json!("other")), Refusal::InvalidClaims);
        assert_eq!(with("aud", json!("other")), Refusal::InvalidClaims);
        assert_eq!(
            with("grants", json!([{ "prefix": "a" }])),
            Refusal::InvalidClaims
        );
        assert_eq!(
            with("grants", json!([{ "prefix": "a", "scopes": "fly" }])),
            Refusal::InvalidClaims
        );
        // Change the signature's first character: the last one carries padding bits, which a
        // change may leave the signature's bytes equal to (the old test failed 1 run in 16).
        let good = token(ok);
        let at = good.rfind('.').map_or(0, |i| i + 1);
        let first = if good[at..].starts_with('A') {
            "B"
        } else {
            "A"
        };
        let forged = format!("{}{first}{}", &good[..at], &good[at + 1..]);
        assert!(matches!(
            jwt.check(&forged),
            Err(Refusal::BadSignature | Refusal::Malformed)
        ));
        assert_eq!(jwt.check("a.b.c").unwrap_err(), Refusal::Malformed);
        let other = encode(
            &Header::default(),
            &json!({"exp": now() + 60}),
            &EncodingKey::from_secret(b"another-secret-that-is-32-bytes-long").unwrap(),
        )
        .unwrap();
        assert_eq!(jwt.check(&other).unwrap_err(), Refusal::BadSignature);
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let jwt = hs(JwtSettings::default());
        let t = token(json!({ "exp": now() + 1, "grants": [{ "prefix": "", "scopes": "r" }] }));
        assert!(jwt.check(&t).is_ok() && jwt.check(&t).is_ok());
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(jwt.check(&t).unwrap_err(), Refusal::Expired);
    }

    #[test]
    fn settings_errors_never_show_the_secret() {
        let e = Jwt::from_settings(&JwtSettings {
            hs256_secret: "short-secret".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(!e.contains("short-secret"), "{e}");
        assert!(
            Jwt::from_settings(&JwtSettings::default())
                .unwrap()
                .is_none()
        );
    }
}
