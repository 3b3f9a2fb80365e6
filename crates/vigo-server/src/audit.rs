//! The tamper-evident audit trail: every admin action and enrollment becomes a row
//! whose SHA-256 covers its own content and the previous row's hash, and whose hash
//! the server signs with its audit key.
//!
//! Editing, deleting or reordering rows afterwards breaks the chain at that row, and
//! [`verify_chain`] names it. The audit key (`audit.key` in the state directory) is
//! never in the database, so someone who can write the database but not the server's
//! state directory cannot rebuild a consistent chain: a rehashed row lacks a valid
//! signature. The newest signed link is also kept in `audit.head` next to the key,
//! so a chain whose tail was cut fails too, even across restarts. Details never hold
//! secrets: they are shown to every admin.
use std::future::Future;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use vigo_pki::{PublicKey, SigningKey};
use vigo_store::{AuditEvent, AuditRow, GENESIS_HASH, Store, StoreError};

use crate::server::Server;

/// The actor of events no person or envoy caused, such as `vigosrv init`.
pub const SYSTEM: &str = "system";

tokio::task_local! {
    /// SHA-256 of the admin token that authenticated the request being served.
    static ADMIN_TOKEN_HASH: String;
}

/// Runs `request` with `token_hash` as the admin behind every event it records.
pub async fn as_admin<F: Future>(token_hash: String, request: F) -> F::Output {
    ADMIN_TOKEN_HASH.scope(token_hash, request).await
}

/// The hash of `row`: SHA-256 over a versioned, length-prefixed encoding of every
/// field but `hash`, so no two different rows encode alike.
pub fn event_hash(row: &AuditRow) -> String {
    let mut digest = Sha256::new();
    digest.update(b"vigo-audit-v1\n");
    let fields = [
        row.seq.to_string(),
        row.at.to_string(),
        row.actor.clone(),
        row.action.clone(),
        row.subject.clone(),
        row.detail.clone(),
        row.prev_hash.clone(),
    ];
    for field in &fields {
        digest.update((field.len() as u64).to_be_bytes());
        digest.update(field.as_bytes());
    }
    digest.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Domain separator of an audit event's signature (over its hash).
const SIGNATURE_CONTEXT: &str = "vigo-audit-event-v1";

/// The signature of an event's `hash` under `key`.
pub fn sign_event(key: &SigningKey, hash: &str) -> String {
    vigo_pki::sign_detached(key, SIGNATURE_CONTEXT, hash.as_bytes())
}

/// Whether `signature` is `key`'s over an event hash.
fn signature_valid(key: &PublicKey, hash: &str, signature: &str) -> bool {
    !signature.is_empty() && vigo_pki::verify_detached(key, SIGNATURE_CONTEXT, hash.as_bytes(), signature).is_ok()
}

/// How the chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The row's content no longer matches its hash.
    Edited,
    /// No row carries this number although later ones (or the server's memory) do.
    Missing,
    /// The row's hash is right for another position in the chain.
    Reordered,
    /// The row is intact but does not link to the row before it, which was rewritten
    /// together with its hash.
    Relinked,
    /// The row's hash is not signed by the server's audit key: the row was rewritten
    /// together with its hash by someone without the key.
    Forged,
}

/// The first broken link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Break {
    /// Number of the first event that does not verify.
    pub seq: i64,
    pub kind: BreakKind,
    /// The finding, for people.
    pub message: String,
}

impl Break {
    fn new(seq: i64, kind: BreakKind) -> Self {
        let what = match kind {
            BreakKind::Edited => "hash mismatch (row edited)".to_string(),
            BreakKind::Missing => format!("event {seq} missing (row deleted)"),
            BreakKind::Reordered => format!("event {seq} out of order (rows reordered)"),
            BreakKind::Relinked => format!("previous-hash mismatch (event {} rewritten)", seq - 1),
            BreakKind::Forged => "signature missing or invalid (row rewritten without the audit key)".to_string(),
        };
        Self { seq, kind, message: format!("audit chain broken at event {seq}: {what}") }
    }
}

/// The newest link a server wrote or found at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// Checks `rows` (in `seq` order, as read from the store) link by link from the
/// first event, each row's signature under `key` (when given), and against `head`,
/// the newest link known to exist. Returns the number of events, or the first
/// broken link.
pub fn verify_chain(rows: &[AuditRow], head: Option<&Head>, key: Option<&PublicKey>) -> Result<usize, Break> {
    let mut prev = GENESIS_HASH;
    for (row, expected) in rows.iter().zip(1_i64..) {
        // The primary key keeps numbers unique and the read sorts them, so a
        // number other than the expected one is larger: something before it is gone.
        if row.seq != expected {
            return Err(Break::new(expected, BreakKind::Missing));
        }
        if event_hash(row) != row.hash {
            let last = rows.last().map_or(0, |r| r.seq).max(head.map_or(0, |h| h.seq));
            let moved =
                (1..=last).any(|seq| seq != row.seq && event_hash(&AuditRow { seq, ..row.clone() }) == row.hash);
            return Err(Break::new(expected, if moved { BreakKind::Reordered } else { BreakKind::Edited }));
        }
        if key.is_some_and(|key| !signature_valid(key, &row.hash, &row.signature)) {
            return Err(Break::new(expected, BreakKind::Forged));
        }
        if row.prev_hash != prev {
            return Err(Break::new(expected, BreakKind::Relinked));
        }
        prev = &row.hash;
    }
    if let Some(head) = head {
        let last = rows.last().map_or(0, |r| r.seq);
        if last < head.seq {
            return Err(Break::new(last + 1, BreakKind::Missing));
        }
        if rows.last().is_some_and(|r| r.seq == head.seq && r.hash != head.hash) {
            return Err(Break::new(head.seq, BreakKind::Edited));
        }
    }
    Ok(rows.len())
}

/// What verifying the stored chain found.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    /// Whether every event verifies.
    pub intact: bool,
    /// Events read from the database.
    pub events: usize,
    /// The first broken link, when not intact.
    pub broken: Option<Break>,
}

/// The audit key and the file that holds the newest signed link, both in the
/// server's state directory, never in the database.
pub struct AuditKey {
    key: SigningKey,
    head_file: PathBuf,
}

/// The signed newest link, as kept in `audit.head`.
#[derive(Debug, Serialize, Deserialize)]
struct SignedHead {
    seq: i64,
    hash: String,
    signature: String,
}

impl AuditKey {
    /// Loads the key from `key_file`; the head is kept in `head_file`.
    pub fn load(key_file: &Path, head_file: &Path) -> anyhow::Result<Self> {
        Ok(Self { key: SigningKey::load(key_file)?, head_file: head_file.to_path_buf() })
    }

    /// A key for tests and tools that keep their state under one directory.
    pub fn new(key: SigningKey, head_file: PathBuf) -> Self {
        Self { key, head_file }
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The newest link recorded in the head file, if there is one; a file that does
    /// not parse or whose signature is not this key's is an error naming the file.
    pub fn stored_head(&self) -> anyhow::Result<Option<Head>> {
        let text = match std::fs::read_to_string(&self.head_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => anyhow::bail!("{}: {e}", self.head_file.display()),
        };
        let head: SignedHead = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not an audit head: {e}", self.head_file.display()))?;
        if !signature_valid(&self.public_key(), &head.hash, &head.signature) {
            anyhow::bail!("{}: the audit head is not signed by this server's audit key", self.head_file.display());
        }
        Ok(Some(Head { seq: head.seq, hash: head.hash }))
    }

    /// Records `row` as the newest link unless the file already holds a later one.
    fn advance_head(&self, row: &AuditRow) -> anyhow::Result<()> {
        if self.stored_head().ok().flatten().is_some_and(|h| h.seq >= row.seq) {
            return Ok(());
        }
        let head = SignedHead { seq: row.seq, hash: row.hash.clone(), signature: sign_event(&self.key, &row.hash) };
        let text = serde_json::to_string(&head)?;
        crate::state_dir::write_private(&self.head_file, format!("{text}\n").as_bytes())
    }
}

/// A server's writer of the audit trail.
pub struct AuditLog {
    key: AuditKey,
    /// The newest link; the lock also makes this server's appends one at a time.
    head: tokio::sync::Mutex<Option<Head>>,
}

impl AuditLog {
    /// Starts from the newest link in the head file, else the newest event in
    /// `store`. The first time a key meets a chain (no head file yet: a chain written
    /// before events were signed), it signs the unsigned events, provided their hashes
    /// link up; a broken chain is left unsigned for `verify` to report.
    pub async fn open(store: &Store, key: AuditKey) -> anyhow::Result<Self> {
        let head = match key.stored_head()? {
            Some(head) => Some(head),
            None => {
                let rows = store.audit_events().await?;
                if verify_chain(&rows, None, None).is_ok() {
                    let unsigned: Vec<&AuditRow> = rows.iter().filter(|r| r.signature.is_empty()).collect();
                    if !unsigned.is_empty() {
                        tracing::warn!(
                            events = unsigned.len(),
                            "signing audit events written before events were signed"
                        );
                    }
                    for row in unsigned {
                        store.sign_audit_event(row.seq, &row.hash, &sign_event(&key.key, &row.hash)).await?;
                    }
                    if let Some(last) = rows.last() {
                        key.advance_head(last)?;
                    }
                } else {
                    tracing::error!("the audit chain is broken; its events are left unsigned");
                }
                rows.last().map(|r| Head { seq: r.seq, hash: r.hash.clone() })
            }
        };
        Ok(Self { key, head: tokio::sync::Mutex::new(head) })
    }

    /// Appends one event, signed, and remembers it as the head.
    pub async fn append(
        &self,
        store: &Store,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &Value,
    ) -> Result<AuditRow, StoreError> {
        let mut head = self.head.lock().await;
        let row = record(store, &self.key, actor, action, subject, detail).await?;
        // Another process (a second `vigosrv init`) may have appended meanwhile:
        // the head only ever moves forwards.
        if head.as_ref().is_none_or(|h| h.seq < row.seq) {
            *head = Some(Head { seq: row.seq, hash: row.hash.clone() });
        }
        Ok(row)
    }

    /// Reads the whole chain fresh from `store` and verifies it, signatures and the
    /// newest known link included, so edits made to the database behind the server's
    /// back are found.
    pub async fn verify(&self, store: &Store) -> Result<Verification, StoreError> {
        let head = self.head.lock().await;
        let mut known = head.clone();
        match self.key.stored_head() {
            Ok(Some(stored)) if known.as_ref().is_none_or(|h| h.seq < stored.seq) => known = Some(stored),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot read the audit head"),
        }
        let rows = store.audit_events().await?;
        let events = rows.len();
        Ok(match verify_chain(&rows, known.as_ref(), Some(&self.key.public_key())) {
            Ok(_) => Verification { intact: true, events, broken: None },
            Err(b) => Verification { intact: false, events, broken: Some(b) },
        })
    }
}

/// Appends one event, signed with `key`, to the chain in `store`, and advances the
/// head file; for callers without a running server. A head file that cannot be
/// written is logged: the event is already stored and signed.
pub async fn record(
    store: &Store,
    key: &AuditKey,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &Value,
) -> Result<AuditRow, StoreError> {
    let event = AuditEvent {
        at: crate::now(),
        actor: actor.to_string(),
        action: action.to_string(),
        subject: subject.to_string(),
        detail: detail.to_string(),
    };
    let row = store
        .append_audit(&event, |row| {
            row.hash = event_hash(row);
            row.signature = sign_event(&key.key, &row.hash);
        })
        .await?;
    if let Err(e) = key.advance_head(&row) {
        tracing::error!(error = %e, seq = row.seq, "cannot record the audit head");
    }
    Ok(row)
}

impl Server {
    /// Records an event by whoever is being served: the admin of the current REST
    /// request, else [`SYSTEM`]. A failure is logged, not returned: the action it
    /// describes has already happened and must not be reported as failed.
    pub async fn audit(&self, action: &str, subject: &str, detail: Value) {
        let actor = self.actor().await;
        self.audit_as(&actor, action, subject, detail).await;
    }

    /// Records an event by `actor`, such as an enrolling envoy.
    pub async fn audit_as(&self, actor: &str, action: &str, subject: &str, detail: Value) {
        if let Err(e) = self.audit.append(&self.store, actor, action, subject, &detail).await {
            tracing::error!(error = %e, actor, action, subject, "cannot record audit event");
        }
    }

    /// The id of the admin token behind the current request, else [`SYSTEM`].
    pub async fn actor(&self) -> String {
        let Ok(hash) = ADMIN_TOKEN_HASH.try_with(String::clone) else {
            return SYSTEM.to_string();
        };
        match self.store.admin_tokens().await {
            Ok(tokens) => tokens.into_iter().find(|t| t.sha256 == hash).map_or_else(|| "admin".to_string(), |t| t.id),
            Err(e) => {
                tracing::warn!(error = %e, "cannot name the admin behind a request");
                "admin".to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sqlx::sqlite::SqlitePool;
    use vigo_store::Store;

    use super::{AuditKey, AuditLog, BreakKind, Head, event_hash, verify_chain};

    /// A store on a real SQLite file with `n` events, a log that appended them, and a
    /// second connection pool on the same file to tamper through.
    struct Chain {
        dir: tempfile::TempDir,
        store: Store,
        log: AuditLog,
        raw: SqlitePool,
    }

    /// The audit key kept in `dir`, created on first use.
    fn key_in(dir: &std::path::Path) -> AuditKey {
        let key_file = dir.join("audit.key");
        if !key_file.exists() {
            vigo_pki::SigningKey::generate().save(&key_file).expect("save key");
        }
        AuditKey::load(&key_file, &dir.join("audit.head")).expect("load key")
    }

    impl Chain {
        async fn new(n: usize) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}", dir.path().join("vigo.db").display());
            let store = Store::open(&url).await.expect("open store");
            let log = AuditLog::open(&store, key_in(dir.path())).await.expect("open log");
            for i in 1..=n {
                let detail = json!({"hosts": format!("web-{i}"), "expires_at": null});
                log.append(&store, "a1b2c3d4", "token.create", &format!("tok{i}"), &detail).await.expect("append");
            }
            let raw = SqlitePool::connect(&url).await.expect("second pool");
            Self { dir, store, log, raw }
        }

        async fn exec(&self, sql: &str) {
            let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).execute(&self.raw).await.expect(sql);
            assert!(done.rows_affected() > 0, "{sql} changed nothing");
        }

        /// The break a fresh verification reports, if any.
        async fn broken(&self) -> Option<(i64, BreakKind, String)> {
            let v = self.log.verify(&self.store).await.expect("verify");
            assert_eq!(v.intact, v.broken.is_none());
            v.broken.map(|b| (b.seq, b.kind, b.message))
        }
    }

    #[tokio::test]
    async fn an_untouched_chain_verifies() {
        let c = Chain::new(5).await;
        let v = c.log.verify(&c.store).await.expect("verify");
        assert!(v.intact && v.events == 5 && v.broken.is_none(), "{v:?}");
        let rows = c.store.audit_events().await.expect("rows");
        assert_eq!(rows[0].prev_hash, "0".repeat(64));
        for pair in rows.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        assert!(rows.iter().all(|r| event_hash(r) == r.hash && r.hash.len() == 64));
        // A log opened later picks up the chain where it ends.
        let reopened = AuditLog::open(&c.store, key_in(c.dir.path())).await.expect("open");
        let row = reopened.append(&c.store, "system", "login", "x", &json!({})).await.expect("append");
        assert_eq!((row.seq, row.prev_hash.as_str()), (6, rows[4].hash.as_str()));
        assert!(reopened.verify(&c.store).await.expect("verify").intact);
    }

    #[tokio::test]
    async fn empty_chain_verifies() {
        let c = Chain::new(0).await;
        assert_eq!(c.broken().await, None);
    }

    /// Each kind of tampering, done straight to the SQLite file, is found at its row.
    #[tokio::test]
    async fn tampering_is_found_at_the_row() {
        let cases: &[(&[&str], i64, BreakKind, &str)] = &[
            (
                &[r#"UPDATE audit_events SET detail = '{"hosts":"*"}' WHERE seq = 3"#],
                3,
                BreakKind::Edited,
                "audit chain broken at event 3: hash mismatch (row edited)",
            ),
            (
                &["UPDATE audit_events SET actor = 'someone-else' WHERE seq = 1"],
                1,
                BreakKind::Edited,
                "audit chain broken at event 1: hash mismatch (row edited)",
            ),
            (
                &["DELETE FROM audit_events WHERE seq = 3"],
                3,
                BreakKind::Missing,
                "audit chain broken at event 3: event 3 missing (row deleted)",
            ),
            (
                &[
                    "UPDATE audit_events SET seq = -1 WHERE seq = 2",
                    "UPDATE audit_events SET seq = 2 WHERE seq = 4",
                    "UPDATE audit_events SET seq = 4 WHERE seq = -1",
                ],
                2,
                BreakKind::Reordered,
                "audit chain broken at event 2: event 2 out of order (rows reordered)",
            ),
            (
                &[r#"UPDATE audit_events SET detail = '{}' WHERE seq = 5"#],
                5,
                BreakKind::Edited,
                "audit chain broken at event 5: hash mismatch (row edited)",
            ),
            (&["DELETE FROM audit_events WHERE seq = 5"], 5, BreakKind::Missing, "event 5 missing (row deleted)"),
            (&["DELETE FROM audit_events"], 1, BreakKind::Missing, "event 1 missing (row deleted)"),
        ];
        for (statements, seq, kind, message) in cases {
            let c = Chain::new(5).await;
            assert_eq!(c.broken().await, None, "intact before {statements:?}");
            for sql in *statements {
                c.exec(sql).await;
            }
            let (at, found, text) = c.broken().await.unwrap_or_else(|| panic!("{statements:?} went unnoticed"));
            assert_eq!((at, found), (*seq, *kind), "{statements:?}: {text}");
            assert!(text.contains(message), "{statements:?}: `{text}` lacks `{message}`");
        }
    }

    /// Rewriting one row together with its hash leaves it without a valid signature.
    #[tokio::test]
    async fn a_rehashed_row_is_unsigned() {
        for seq in [2, 5] {
            let c = Chain::new(5).await;
            let mut rows = c.store.audit_events().await.expect("rows");
            let row = &mut rows[usize::try_from(seq - 1).expect("small")];
            row.detail = r#"{"hosts":"*"}"#.into();
            let forged = event_hash(row);
            c.exec(&format!(
                r#"UPDATE audit_events SET detail = '{{"hosts":"*"}}', hash = '{forged}' WHERE seq = {seq}"#
            ))
            .await;
            let (found_at, found, text) = c.broken().await.unwrap_or_else(|| panic!("rehashed event {seq} unnoticed"));
            assert_eq!((found_at, found), (seq, BreakKind::Forged), "{text}");
        }
    }

    /// The attack on an unkeyed chain: edit a row, then recompute every later hash
    /// and link, straight in the database. The hashes all check out; the signatures
    /// name the first rewritten row.
    #[tokio::test]
    async fn an_edited_and_rebuilt_chain_fails_at_the_first_rewritten_row() {
        let c = Chain::new(6).await;
        let mut rows = c.store.audit_events().await.expect("rows");
        rows[2].detail = r#"{"hosts":"*","expires_at":null}"#.into();
        for i in 2..rows.len() {
            rows[i].prev_hash = rows[i - 1].hash.clone();
            rows[i].hash = event_hash(&rows[i]);
        }
        for row in &rows[2..] {
            let detail = row.detail.replace('\'', "''");
            c.exec(&format!(
                "UPDATE audit_events SET detail = '{detail}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
                row.prev_hash, row.hash, row.seq
            ))
            .await;
        }
        let rebuilt = c.store.audit_events().await.expect("rows");
        assert_eq!(verify_chain(&rebuilt, None, None), Ok(6), "the rebuilt chain is consistent by hashes alone");
        let (at, kind, text) = c.broken().await.expect("a rebuilt chain must not verify");
        assert_eq!((at, kind), (3, BreakKind::Forged), "{text}");
        assert!(text.contains("audit chain broken at event 3"), "{text}");

        // Nor after a restart: a server opening the rebuilt chain does not bless it.
        let reopened = AuditLog::open(&c.store, key_in(c.dir.path())).await.expect("open");
        let v = reopened.verify(&c.store).await.expect("verify");
        assert_eq!(v.broken.map(|b| (b.seq, b.kind)), Some((3, BreakKind::Forged)));
    }

    /// Signatures stripped from the database are not restored by the next server: only
    /// a key meeting a chain for the first time (no head file) signs old events.
    #[tokio::test]
    async fn stripped_signatures_stay_missing_after_a_restart() {
        let c = Chain::new(3).await;
        c.exec("UPDATE audit_events SET signature = ''").await;
        let reopened = AuditLog::open(&c.store, key_in(c.dir.path())).await.expect("open");
        let v = reopened.verify(&c.store).await.expect("verify");
        assert_eq!(v.broken.map(|b| (b.seq, b.kind)), Some((1, BreakKind::Forged)));
    }

    /// A cut tail is found by a server started after the cut: the head file outside
    /// the database still names the newest event.
    #[tokio::test]
    async fn a_cut_tail_is_found_after_a_restart() {
        let c = Chain::new(5).await;
        c.exec("DELETE FROM audit_events WHERE seq >= 4").await;
        let reopened = AuditLog::open(&c.store, key_in(c.dir.path())).await.expect("open");
        let v = reopened.verify(&c.store).await.expect("verify");
        assert_eq!(v.broken.map(|b| (b.seq, b.kind)), Some((4, BreakKind::Missing)));
    }

    /// A chain written before events were signed is signed once, when the key first
    /// meets it, and verifies from then on.
    #[tokio::test]
    async fn an_unsigned_chain_from_before_signatures_is_signed_on_first_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("vigo.db").display());
        let store = Store::open(&url).await.expect("open store");
        for i in 1..=3 {
            let event = vigo_store::AuditEvent {
                at: 1_800_000_000 + i,
                actor: "system".into(),
                action: "publish".into(),
                subject: i.to_string(),
                detail: "{}".into(),
            };
            store.append_audit(&event, |r| r.hash = event_hash(r)).await.expect("append unsigned");
        }
        assert!(!dir.path().join("audit.head").exists());
        let log = AuditLog::open(&store, key_in(dir.path())).await.expect("open");
        assert!(store.audit_events().await.expect("rows").iter().all(|r| !r.signature.is_empty()));
        assert!(dir.path().join("audit.head").exists());
        let v = log.verify(&store).await.expect("verify");
        assert!(v.intact && v.events == 3, "{v:?}");
    }

    /// A head file from another key, or garbage, stops the log from opening, naming
    /// the file.
    #[tokio::test]
    async fn a_foreign_head_file_is_refused() {
        let c = Chain::new(2).await;
        let other = tempfile::tempdir().expect("tempdir");
        let foreign = key_in(other.path());
        let rows = c.store.audit_events().await.expect("rows");
        foreign.advance_head(&rows[1]).expect("foreign head");
        std::fs::copy(other.path().join("audit.head"), c.dir.path().join("audit.head")).expect("copy");
        let err = AuditLog::open(&c.store, key_in(c.dir.path())).await.err().expect("foreign head accepted");
        assert!(err.to_string().contains("audit.head"), "{err:#}");
        std::fs::write(c.dir.path().join("audit.head"), "not json").expect("write");
        let err = AuditLog::open(&c.store, key_in(c.dir.path())).await.err().expect("garbage head accepted");
        assert!(err.to_string().contains("audit.head"), "{err:#}");
    }

    /// Enrollment is recorded under the envoy's name with the token id, never the
    /// token; revoking the envoy outside a request is the system's doing.
    #[tokio::test]
    async fn enrollment_and_envoy_revocation_are_recorded() {
        use vigo_proto::agent_server::Agent as _;

        let dir = tempfile::tempdir().expect("tempdir");
        let state = crate::state_dir::StateDir::new(dir.path().join("state"));
        crate::state_dir::init(&state, &[], None).await.expect("init");
        std::fs::create_dir_all(dir.path().join("config/modules")).expect("config dir");
        let store = Store::open(&state.sqlite_url()).await.expect("store");
        let settings = crate::settings::Settings::default();
        let (server, _writer) =
            crate::server::Server::open(state, dir.path().join("config"), settings, store).await.expect("server");
        let token = server.create_token("web-*", None).await.expect("token");
        let request = vigo_proto::EnrollRequest {
            token: token.token.clone(),
            hostname: "web-1".into(),
            csr_pem: vigo_pki::EnvoyTlsKey::generate().expect("key").csr("web-1").expect("csr"),
            signing_public_key: vigo_pki::SigningKey::generate().public_key().as_bytes().to_vec(),
            age_recipient: vigo_pki::AgeIdentity::generate().recipient(),
        };
        let service = crate::grpc::AgentService { server: server.clone() };
        service.enroll(tonic::Request::new(request)).await.expect("enrolled");
        server.revoke_envoy("web-1").await.expect("revoked");

        let rows = server.store.audit_events().await.expect("rows");
        let seen: Vec<(&str, &str, &str)> =
            rows.iter().map(|r| (r.actor.as_str(), r.action.as_str(), r.subject.as_str())).collect();
        assert_eq!(
            seen[1..],
            [
                ("system", "token.create", token.id.as_str()),
                ("web-1", "enroll", "web-1"),
                ("system", "envoy.revoke", "web-1"),
            ]
        );
        let detail: serde_json::Value = serde_json::from_str(&rows[2].detail).expect("JSON detail");
        assert_eq!(detail["token"], token.id.as_str());
        assert!(rows.iter().all(|r| !r.detail.contains(&token.token)), "no secret in the trail");
        assert!(server.audit.verify(&server.store).await.expect("verify").intact);
    }

    #[test]
    fn a_head_ahead_of_the_rows_means_the_tail_was_cut() {
        let head = Head { seq: 3, hash: "h".into() };
        let b = verify_chain(&[], Some(&head), None).expect_err("rows missing");
        assert_eq!((b.seq, b.kind), (1, BreakKind::Missing));
        assert_eq!(verify_chain(&[], None, None), Ok(0));
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = vigo_store::AuditRow {
            seq: 1,
            at: 10,
            actor: "a".into(),
            action: "b".into(),
            subject: "c".into(),
            detail: "{}".into(),
            prev_hash: "0".repeat(64),
            hash: String::new(),
            signature: String::new(),
        };
        let h = event_hash(&base);
        let variants = [
            vigo_store::AuditRow { seq: 2, ..base.clone() },
            vigo_store::AuditRow { at: 11, ..base.clone() },
            vigo_store::AuditRow { actor: "ab".into(), action: String::new(), ..base.clone() },
            vigo_store::AuditRow { subject: "d".into(), ..base.clone() },
            vigo_store::AuditRow { detail: "{ }".into(), ..base.clone() },
            vigo_store::AuditRow { prev_hash: "1".repeat(64), ..base.clone() },
        ];
        for v in variants {
            assert_ne!(event_hash(&v), h, "{v:?}");
        }
        assert_eq!(event_hash(&vigo_store::AuditRow { hash: "x".into(), ..base.clone() }), h, "hash is not hashed");
        let signed = vigo_store::AuditRow { signature: "s".into(), ..base.clone() };
        assert_eq!(event_hash(&signed), h, "the signature is not hashed");
    }
}
