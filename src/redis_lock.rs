//! Owner-token locks in Redis, shared by the cache's fill lock and the OAuth2 refresh lock.
//!
//! A lock is `SET key <random owner> NX PX ttl`; only its owner releases it, with a
//! compare-and-delete script, so a holder that outlived its lock never deletes the next holder's.
//! This module builds the commands; the callers run them under their own deadlines.

use std::sync::OnceLock;
use std::time::Duration;

use redis::Script;

/// Outcome of trying to take a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    /// We hold it and release it with this owner value.
    Held(String),
    /// Someone else holds it.
    Busy,
    /// Redis did not answer: go on without coordination.
    Unavailable,
}

/// The command that takes `key` for `ttl`, and the owner value it carries.
#[must_use]
pub fn acquire(key: &str, ttl: Duration) -> (redis::Cmd, String) {
    let owner = new_owner();
    let mut command = redis::cmd("SET");
    command
        .arg(key)
        .arg(&owner)
        .arg("NX")
        .arg("PX")
        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
    (command, owner)
}

/// A random owner value for a lock.
#[must_use]
pub fn new_owner() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Reads the reply of [`acquire`]'s command: `SET … NX` answers `OK` or nil (`None` here:
/// Redis did not answer).
#[must_use]
pub fn outcome(owner: String, reply: Option<Option<String>>) -> Lock {
    match reply.map(|ok| ok.is_some()) {
        Some(true) => Lock::Held(owner),
        Some(false) => Lock::Busy,
        None => Lock::Unavailable,
    }
}

/// Deletes `KEYS[1]` only if it still holds `ARGV[1]`: releases a lock by its owner, or drops a
/// value (such as a rejected token) only if nobody replaced it meanwhile.
pub fn delete_if_equal() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(DELETE_IF_EQUAL))
}

/// The source of [`delete_if_equal`]: one key, so it runs on any Redis Cluster node that owns it.
pub(crate) const DELETE_IF_EQUAL: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_map_to_outcomes_and_owners_are_unique() {
        assert_eq!(
            outcome("o".into(), Some(Some("OK".into()))),
            Lock::Held("o".into())
        );
        assert_eq!(outcome("o".into(), Some(None)), Lock::Busy);
        assert_eq!(outcome("o".into(), None), Lock::Unavailable);
        let (_, first) = acquire("k", Duration::from_millis(10));
        let (_, second) = acquire("k", Duration::from_millis(10));
        assert_ne!(first, second);
    }
}
