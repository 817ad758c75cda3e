//! Callback and claim tokens: HS256 JWTs (the server's token secret, kept beside its signing
//! keys) naming the subscription incarnation, the wake and its generation. They are bearer
//! credentials for one wake's callback, ack and release only; the engine still checks the
//! generation and wake against the current state (a valid token of a finished wake is fenced).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use riffle_engine::subs::WakeInfo;
use serde::{Deserialize, Serialize};

/// How long a token is accepted: generation fencing ends a wake's tokens long before this.
const LIFETIME_SECS: u64 = 24 * 3600;
/// The `typ` claim, so no other HS256 token of ours can pass for a wake token.
const KIND: &str = "ds-wake";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeClaims {
    /// The subscription's name.
    pub sub: String,
    /// Its incarnation.
    pub sid: u64,
    pub generation: u64,
    pub wake_id: String,
    pub exp: u64,
    pub typ: String,
}

/// Why a token was refused: the protocol's `TOKEN_EXPIRED` or `TOKEN_INVALID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid,
}

/// A token for wake `w` (a claim's or a webhook delivery's), issued at `now_unix`.
pub fn issue(secret: &[u8; 32], w: &WakeInfo, now_unix: u64) -> String {
    let claims = WakeClaims {
        sub: w.name.clone(),
        sid: w.sub_id,
        generation: w.generation,
        wake_id: w.wake_id.clone(),
        exp: now_unix + LIFETIME_SECS,
        typ: KIND.to_string(),
    };
    // HS256 with a 32-byte key over a plain struct of strings and integers cannot fail.
    EncodingKey::from_secret(secret)
        .and_then(|key| jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key))
        .unwrap_or_default()
}

/// The claims of a valid, unexpired wake token of subscription `sub`.
pub fn check(secret: &[u8; 32], token: &str, sub: &str) -> Result<WakeClaims, TokenError> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.set_required_spec_claims(&["exp"]);
    let key = DecodingKey::from_secret(secret).map_err(|_| TokenError::Invalid)?;
    let data = jsonwebtoken::decode::<WakeClaims>(token, &key, &v).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        _ => TokenError::Invalid,
    })?;
    if data.claims.typ != KIND || data.claims.sub != sub {
        return Err(TokenError::Invalid);
    }
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_subscription_and_expire() {
        let secret = [7u8; 32];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let wake = |wake_id: &str| WakeInfo {
            name: "s".into(),
            origin: String::new(),
            sub_id: 9,
            wake_id: wake_id.into(),
            generation: 3,
            streams: Vec::new(),
            lease_ttl_ms: 1000,
        };
        let t = issue(&secret, &wake("w_9_3"), now);
        let c = check(&secret, &t, "s").unwrap();
        assert_eq!((c.sid, c.generation, c.wake_id.as_str()), (9, 3, "w_9_3"));
        assert_eq!(check(&secret, &t, "other"), Err(TokenError::Invalid));
        assert_eq!(check(&[8u8; 32], &t, "s"), Err(TokenError::Invalid));
        assert_eq!(check(&secret, "not.a.token", "s"), Err(TokenError::Invalid));
        let old = issue(&secret, &wake("w"), now - 2 * LIFETIME_SECS);
        assert_eq!(check(&secret, &old, "s"), Err(TokenError::Expired));
    }
}
