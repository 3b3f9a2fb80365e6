//! The certificate revocation list this envoy holds for its swarm peer port: the
//! server's list as the last check-in delivered it, kept in the state dir so the peer
//! server refuses revoked envoys from its first handshake after a restart.
//!
//! Check-ins report the list's digest; the server answers with its own list only when
//! that differs, and the list received replaces this one whole.

use std::path::PathBuf;

use vigo_pki::RevocationList;

use crate::files::write_atomic;
use crate::paths::AgentPaths;

fn path(paths: &AgentPaths) -> PathBuf {
    paths.state.join("revoked.json")
}

/// The list saved by the last check-in; empty when there is none. A file that cannot
/// be read is reported and an empty list returned: the next check-in sends the
/// server's list again (its digest will differ).
pub fn load(paths: &AgentPaths) -> RevocationList {
    let file = path(paths);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return RevocationList::new(),
        Err(e) => {
            tracing::warn!(path = %file.display(), error = %e, "cannot read the revocation list; asking the server again");
            return RevocationList::new();
        }
    };
    let parsed = serde_json::from_slice::<Vec<String>>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|list| RevocationList::with_fingerprints(list).map_err(|e| e.to_string()));
    parsed.unwrap_or_else(|e| {
        tracing::warn!(path = %file.display(), error = %e, "revocation list is not valid; asking the server again");
        RevocationList::new()
    })
}

/// Checks and saves the server's list; returns it. A list with an entry that is not a
/// fingerprint is refused whole (and the one held is kept).
pub fn save(paths: &AgentPaths, fingerprints: &[String]) -> anyhow::Result<Vec<String>> {
    let list = RevocationList::with_fingerprints(fingerprints)
        .map_err(|e| anyhow::anyhow!("the server's certificate revocation list: {e}"))?;
    let normalized = list.fingerprints();
    write_atomic(&path(paths), &serde_json::to_vec(&normalized)?, 0o600)?;
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_list_is_kept_across_restarts_and_garbage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = AgentPaths { etc: dir.path().join("etc"), state: dir.path().join("state") };
        assert!(load(&paths).is_empty(), "no list yet");
        let (a, b) = ("AB".repeat(32), "cd".repeat(32));
        assert_eq!(save(&paths, &[a.clone(), b.clone()]).expect("save"), ["ab".repeat(32), b.clone()]);
        let loaded = load(&paths);
        assert!(loaded.is_revoked(&a) && loaded.is_revoked(&b));
        assert_eq!(loaded.digest(), RevocationList::with_fingerprints([&a, &b]).expect("valid").digest());
        // A list with something that is not a fingerprint is refused whole; the old one stays.
        let err = save(&paths, &[a.clone(), "not a fingerprint".into()]).expect_err("garbage");
        assert!(err.to_string().contains("not a fingerprint"), "{err}");
        assert_eq!(load(&paths).len(), 2);
        // A damaged file reads as no list: the next check-in fetches the server's again.
        std::fs::write(path(&paths), b"{not json").expect("damage");
        assert!(load(&paths).is_empty());
    }
}
