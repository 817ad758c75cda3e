//! Routers: a rule that copies every record appended to a source topic into a destination
//! topic, asynchronously. A router belongs to its destination (a destination has at most one
//! router feeding it), and its definition and cursor are part of that topic's state: they are
//! logged with the destination's changes and checkpointed with it.

use super::TagMatch;
use serde::{Deserialize, Serialize};

/// Most times one record is forwarded (copies of copies) around a cycle of routers that
/// allow one.
pub const HOP_CAP: u8 = 8;

/// What a router promises about copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Guarantee {
    AtLeastOnce,
    ExactlyOnce,
}

/// A router's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterDef {
    pub source: String,
    pub dest: String,
    /// Copies keep the record's origin node (so loop prevention works across topics).
    pub preserve_node: bool,
    pub preserve_tag: bool,
    /// Create the destination (with the default configuration) if it does not exist.
    pub create_dest: bool,
    /// Only records whose tag matches are forwarded.
    pub filter: Option<TagMatch>,
    /// Accept a router that closes a cycle (each record then goes at most [`HOP_CAP`] hops).
    pub allow_cycle: bool,
    pub guarantee: Guarantee,
}

/// A router as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterInfo {
    pub name: String,
    pub def: RouterDef,
    /// Records copied into the destination since the router was created.
    pub forwarded_total: u64,
}

/// The outcome of a `PUT` of a router.
#[derive(Debug, Clone)]
pub struct RouterPut {
    pub created: bool,
    pub info: RouterInfo,
}

/// A router's state inside its destination topic: the definition and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Feed {
    pub name: String,
    pub def: RouterDef,
    /// The source seq copied (or skipped) up to.
    pub cursor: u64,
    pub forwarded: u64,
}

impl RouterDef {
    /// Whether a record with `tag` passes the filter.
    pub(crate) fn passes(&self, tag: Option<&str>) -> bool {
        match (&self.filter, tag) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(TagMatch::Eq(x)), Some(t)) => t == x,
            (Some(TagMatch::Prefix(p)), Some(t)) => t.starts_with(p.as_str()),
        }
    }
}

/// The cycle a new router `source -> dest` would close among `edges` (source, dest), as the
/// list of topics from `source` back to it, or `None`.
pub(crate) fn cycle<'a>(
    edges: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    source: &str,
    dest: &str,
) -> Option<Vec<String>> {
    // Depth-first from `dest`, iteratively, remembering how each topic was reached.
    let mut came_from: std::collections::HashMap<String, String> = Default::default();
    let mut stack = vec![dest.to_string()];
    let mut seen: std::collections::HashSet<String> = [dest.to_string()].into();
    while let Some(at) = stack.pop() {
        if at == source {
            // The chain back from `source` to `dest`, reversed: source -> dest -> ... -> source.
            let mut chain = vec![source.to_string()];
            let mut cur = source.to_string();
            while cur != dest {
                cur = came_from.get(&cur)?.clone();
                chain.push(cur.clone());
            }
            let mut out = vec![source.to_string()];
            out.extend(chain.into_iter().rev());
            return Some(out);
        }
        for (s, d) in edges.clone() {
            if s == at && seen.insert(d.to_string()) {
                came_from.insert(d.to_string(), at.clone());
                stack.push(d.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found_with_their_path() {
        let edges = [("b", "c"), ("c", "a"), ("x", "y")];
        let e = edges.iter().map(|(s, d)| (*s, *d));
        assert_eq!(
            cycle(e.clone(), "a", "b"),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        assert_eq!(cycle(e.clone(), "a", "x"), None);
        assert_eq!(
            cycle(e, "y", "x"),
            Some(vec!["y".into(), "x".into(), "y".into()])
        );
    }
}
