//! The tamper-evident audit trail: every admin action and enrollment becomes a row
//! whose SHA-256 covers its own content and the previous row's hash.
//!
//! Editing, deleting or reordering rows afterwards breaks the chain at that row, and
//! [`verify_chain`] names it. The hash has no key, so someone who can write the
//! database can rebuild a consistent chain from the edited row onwards; the server
//! remembers the newest link it wrote, which catches a rewritten or truncated tail
//! while it runs. Details never hold secrets: they are shown to every admin.

use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
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
        };
        Self { seq, kind, message: format!("audit chain broken at event {seq}: {what}") }
    }
}

/// The newest link a server wrote or found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// Checks `rows` (in `seq` order, as read from the store) link by link from the
/// first event, and against `head`, the newest link known to exist. Returns the
/// number of events, or the first broken link.
pub fn verify_chain(rows: &[AuditRow], head: Option<&Head>) -> Result<usize, Break> {
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

/// A server's writer of the audit trail.
pub struct AuditLog {
    /// The newest link; the lock also makes this server's appends one at a time.
    head: tokio::sync::Mutex<Option<Head>>,
}

impl AuditLog {
    /// Starts from the newest event in `store`.
    pub async fn open(store: &Store) -> Result<Self, StoreError> {
        let head = store.last_audit_event().await?.map(|r| Head { seq: r.seq, hash: r.hash });
        Ok(Self { head: tokio::sync::Mutex::new(head) })
    }

    /// Appends one event and remembers it as the head.
    pub async fn append(
        &self,
        store: &Store,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &Value,
    ) -> Result<AuditRow, StoreError> {
        let mut head = self.head.lock().await;
        let row = record(store, actor, action, subject, detail).await?;
        // Another process (a second `vigosrv init`) may have appended meanwhile:
        // the head only ever moves forwards.
        if head.as_ref().is_none_or(|h| h.seq < row.seq) {
            *head = Some(Head { seq: row.seq, hash: row.hash.clone() });
        }
        Ok(row)
    }

    /// Reads the whole chain fresh from `store` and verifies it, so edits made to
    /// the database behind the server's back are found.
    pub async fn verify(&self, store: &Store) -> Result<Verification, StoreError> {
        let head = self.head.lock().await;
        let rows = store.audit_events().await?;
        let events = rows.len();
        Ok(match verify_chain(&rows, head.as_ref()) {
            Ok(_) => Verification { intact: true, events, broken: None },
            Err(b) => Verification { intact: false, events, broken: Some(b) },
        })
    }
}

/// Appends one event to the chain in `store`; for callers without a running server.
pub async fn record(
    store: &Store,
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
    store.append_audit(&event, event_hash).await
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

    use super::{AuditLog, BreakKind, Head, event_hash, verify_chain};

    /// A store on a real SQLite file with `n` events, a log that appended them, and a
    /// second connection pool on the same file to tamper through.
    struct Chain {
        _dir: tempfile::TempDir,
        store: Store,
        log: AuditLog,
        raw: SqlitePool,
    }

    impl Chain {
        async fn new(n: usize) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}", dir.path().join("vigo.db").display());
            let store = Store::open(&url).await.expect("open store");
            let log = AuditLog::open(&store).await.expect("open log");
            for i in 1..=n {
                let detail = json!({"hosts": format!("web-{i}"), "expires_at": null});
                log.append(&store, "a1b2c3d4", "token.create", &format!("tok{i}"), &detail).await.expect("append");
            }
            let raw = SqlitePool::connect(&url).await.expect("second pool");
            Self { _dir: dir, store, log, raw }
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
        let reopened = AuditLog::open(&c.store).await.expect("open");
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

    /// Rewriting a row together with its hash leaves the next row's link pointing at
    /// the old hash; rewriting the newest row that way contradicts the server's memory.
    #[tokio::test]
    async fn a_rehashed_row_breaks_the_next_link_or_the_head() {
        for (seq, at, kind) in [(2, 3, BreakKind::Relinked), (5, 5, BreakKind::Edited)] {
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
            assert_eq!((found_at, found), (at, kind), "{text}");
        }
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
        let b = verify_chain(&[], Some(&head)).expect_err("rows missing");
        assert_eq!((b.seq, b.kind), (1, BreakKind::Missing));
        assert_eq!(verify_chain(&[], None), Ok(0));
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
    }
}
