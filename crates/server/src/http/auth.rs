//! API keys (the topics reference's format, for both APIs): a comma-separated list of `key`,
//! `key:scopes` or `key:scopes:prefixes`. Scopes are `+`-separated from `read|r`, `write|w`,
//! `delete|del|d`, `admin|a` and `rw`; an empty scopes field means all of them. Prefixes are
//! `|`-separated name prefixes (stream or topic names; a stream's path `/v1/stream/x` stands
//! for its name `x`) the key may touch; none means
//! every name. JWT gatekeeper tokens (`super::jwt`) give the same [`Credential`], with grants
//! per name or prefix. Keys are kept only as SHA-256 digests and a presented token is compared with
//! every one in constant time; neither appears in a log line or an error.

use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const READ: Scopes = Scopes(1);
    pub const WRITE: Scopes = Scopes(2);
    pub const DELETE: Scopes = Scopes(4);
    pub const ADMIN: Scopes = Scopes(8);
    pub const ALL: Scopes = Scopes(15);
    pub const NONE: Scopes = Scopes(0);

    pub fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn with(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    /// `read|r`, `write|w`, `rw`, `delete|del|d`, `admin|a`, `+`-separated; empty: all.
    pub fn parse(field: &str) -> Option<Scopes> {
        if field.is_empty() {
            return Some(Scopes::ALL);
        }
        let mut s = Scopes::NONE;
        for token in field.split('+') {
            s = s.with(match token.trim() {
                "read" | "r" => Scopes::READ,
                "write" | "w" => Scopes::WRITE,
                "rw" => Scopes::READ.with(Scopes::WRITE),
                "delete" | "del" | "d" => Scopes::DELETE,
                "admin" | "a" => Scopes::ADMIN,
                _ => return None,
            });
        }
        Some(s)
    }

    /// The scope names, for messages.
    pub fn names(self) -> String {
        let names: Vec<&str> = [
            (Scopes::READ, "read"),
            (Scopes::WRITE, "write"),
            (Scopes::DELETE, "delete"),
            (Scopes::ADMIN, "admin"),
        ]
        .iter()
        .filter(|(s, _)| self.contains(*s))
        .map(|(_, n)| *n)
        .collect();
        names.join("+")
    }
}

struct Key {
    digest: [u8; 32],
    scopes: Scopes,
    grants: Option<Arc<[Grant]>>,
}

/// The configured keys; none: authentication is off.
#[derive(Default)]
pub struct Keys {
    keys: Vec<Key>,
    /// Digest to key: a lookup by the presented token's digest costs the same with 1 key or
    /// 10,000 (what a lookup's timing could reveal is about a SHA-256 of the attacker's own
    /// guess, which says nothing of any key); the match is then confirmed in constant time.
    by_digest: std::collections::HashMap<[u8; 32], usize>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} configured)", self.keys.len())
    }
}

/// Names a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Names {
    /// Every name starting with this (`""`: every name).
    Prefix(String),
    /// Exactly this name.
    Exact(String),
}

impl Names {
    /// Names starting with `p`. A stream's path (`/v1/stream/orders`) stands for its name
    /// (`orders`): names are what requests are checked against. `None` for the bare path
    /// `/v1/stream/`, which names no stream (as a prefix of every name it would grant topics
    /// and subscriptions too).
    pub fn prefix(p: &str) -> Option<Names> {
        name_of(p).map(|n| Names::Prefix(n.to_string()))
    }

    /// Exactly the name `n` (or the stream at the path `n`); `None` for the bare path.
    pub fn exact(n: &str) -> Option<Names> {
        name_of(n).map(|n| Names::Exact(n.to_string()))
    }
}

/// The name `s` stands for: itself, or the stream's name after `/v1/stream/` (`None` when
/// nothing follows it).
fn name_of(s: &str) -> Option<&str> {
    match s.strip_prefix(STREAM_PATH) {
        Some("") => None,
        Some(name) => Some(name),
        None => Some(s),
    }
}

/// Where stream paths start.
const STREAM_PATH: &str = "/v1/stream/";

/// What a credential may do on some names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub names: Names,
    pub scopes: Scopes,
}

/// Who a request comes from: what it may do, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Everything it may do somewhere: what routes that name nothing check.
    pub scopes: Scopes,
    /// What it may do where (`None`: `scopes` on every name). On a name, the scopes of every
    /// grant that covers it add up.
    pub grants: Option<Arc<[Grant]>>,
    /// Identifies the credential (a digest of its token), to bind sessions and count slots.
    pub id: [u8; 32],
    /// When it stops being valid, in Unix seconds (a JWT's `exp`; `None` for API keys).
    pub expires_at: Option<u64>,
}

impl Credential {
    /// What it may do on `name`.
    pub fn scopes_on(&self, name: &str) -> Scopes {
        let Some(grants) = &self.grants else {
            return self.scopes;
        };
        grants
            .iter()
            .filter(|g| match &g.names {
                Names::Prefix(p) => name.starts_with(p.as_str()),
                Names::Exact(n) => n == name,
            })
            .fold(Scopes::NONE, |s, g| s.with(g.scopes))
    }

    /// Whether it may do `scopes` on `name`.
    pub fn allows(&self, name: &str, scopes: Scopes) -> bool {
        self.scopes_on(name).contains(scopes)
    }

    /// Whether it may do `scopes` on every name starting with `prefix`.
    pub fn allows_prefix(&self, prefix: &str, scopes: Scopes) -> bool {
        let Some(grants) = &self.grants else {
            return self.scopes.contains(scopes);
        };
        grants
            .iter()
            .filter(|g| matches!(&g.names, Names::Prefix(p) if prefix.starts_with(p.as_str())))
            .fold(Scopes::NONE, |s, g| s.with(g.scopes))
            .contains(scopes)
    }

    /// Whether it may read `name` (what listings and watches show).
    pub fn covers(&self, name: &str) -> bool {
        self.allows(name, Scopes::READ)
    }
}

pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Keys {
    /// Parse the list. A malformed entry is named by its position (1-based), never its text.
    pub fn parse(list: &str) -> Result<Keys, String> {
        let mut keys = Vec::new();
        for (i, entry) in list.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let bad = |why: &str| format!("API key entry {} is malformed: {why}", i + 1);
            let mut parts = entry.splitn(3, ':');
            let key = parts.next().unwrap_or_default();
            if key.is_empty() {
                return Err(bad("the key is empty"));
            }
            let scopes = Scopes::parse(parts.next().unwrap_or_default())
                .ok_or_else(|| bad("unknown scope (read, write, delete, admin, rw)"))?;
            let grants = match parts.next() {
                None => None,
                Some(p) => {
                    let list: Vec<Grant> = p
                        .split('|')
                        .filter(|x| !x.is_empty())
                        .map(|x| {
                            let names = Names::prefix(x).ok_or_else(|| {
                                bad("the prefix /v1/stream/ names no stream (give a name after it)")
                            })?;
                            Ok(Grant { names, scopes })
                        })
                        .collect::<Result<_, String>>()?;
                    if list.is_empty() {
                        return Err(bad("the prefixes field is empty"));
                    }
                    Some(Arc::from(list))
                }
            };
            keys.push(Key {
                digest: digest(key),
                scopes,
                grants,
            });
        }
        let mut by_digest = std::collections::HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            // A key listed twice keeps its first entry.
            by_digest.entry(k.digest).or_insert(i);
        }
        Ok(Keys { keys, by_digest })
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The credential of `token`: its digest looked up, and the match confirmed in constant
    /// time.
    pub fn check(&self, token: &str) -> Option<Credential> {
        let d = digest(token);
        let k = &self.keys[*self.by_digest.get(&d)?];
        bool::from(k.digest.ct_eq(&d)).then(|| Credential {
            scopes: k.scopes,
            grants: k.grants.clone(),
            id: k.digest,
            expires_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_scopes_and_prefixes() {
        let k = Keys::parse("all, reader:r, rw:rw:orders:|/v1/stream/a, admin:a+d:x").unwrap();
        assert!(k.enabled());
        let all = k.check("all").unwrap();
        assert_eq!((all.scopes, all.grants.is_none()), (Scopes::ALL, true));
        let r = k.check("reader").unwrap();
        assert!(r.scopes.contains(Scopes::READ) && !r.scopes.contains(Scopes::WRITE));
        let rw = k.check("rw").unwrap();
        assert!(rw.scopes.contains(Scopes::READ.with(Scopes::WRITE)));
        assert!(rw.covers("orders:eu") && rw.covers("abc") && !rw.covers("other"));
        assert!(rw.allows("orders:eu", Scopes::WRITE) && !rw.allows("orders:eu", Scopes::DELETE));
        assert!(rw.allows_prefix("orders:e", Scopes::READ) && !rw.allows_prefix("o", Scopes::READ));
        let ad = k.check("admin").unwrap();
        assert!(ad.scopes.contains(Scopes::ADMIN.with(Scopes::DELETE)));
        assert!(k.check("nope").is_none() && k.check("").is_none());
        // A stream's path stands for its name.
        let k = Keys::parse("s:r:/v1/stream/orders").unwrap();
        let s = k.check("s").unwrap();
        assert!(s.covers("orders") && s.covers("orders/eu") && !s.covers("other"));
        // The bare stream path is no prefix of everything.
        assert!(
            Keys::parse("s:rw:/v1/stream/")
                .unwrap_err()
                .contains("names no stream")
        );
        assert!(!Keys::parse("").unwrap().enabled());
    }

    #[test]
    fn a_malformed_entry_is_named_by_position_not_text() {
        let e = Keys::parse("good, secret-key:bogus").unwrap_err();
        assert!(e.contains("entry 2") && !e.contains("secret-key"), "{e}");
        assert!(Keys::parse(":r").unwrap_err().contains("entry 1"));
        assert!(Keys::parse("k:r:").unwrap_err().contains("prefixes"));
    }
}
