//! The audit trail's table: appending the next link of the hash chain and reading the
//! chain back.
//!
//! The store only keeps the chain in order; what a hash covers is the server's
//! business, handed in as the `seal` closure of [`Store::append_audit`].

use super::{Pool, Store};
use crate::columns::{self, Columns};
use crate::error::{Result, on_row, on_table};

const AUDIT: &str = "audit_events";

/// The `prev_hash` of the first event: no event comes before it.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, before it takes its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Admin token id, envoy name or `system`.
    pub actor: String,
    pub action: String,
    /// What the action was done to: a token id, an envoy name, a version number.
    pub subject: String,
    /// A JSON document; never a secret.
    pub detail: String,
}

/// One link of the audit chain as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// 1 for the first event, then one more for each.
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    /// `hash` of the event before, [`GENESIS_HASH`] for the first.
    pub prev_hash: String,
    /// Lowercase hex SHA-256 over every other field but `signature`.
    pub hash: String,
    /// The server's signature of `hash` (base64), empty on rows written before
    /// events were signed.
    pub signature: String,
}

fn audit_row(row: &impl Columns) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        seq: row.int("seq")?,
        at: row.int("at")?,
        actor: row.text("actor")?,
        action: row.text("action")?,
        subject: row.text("subject")?,
        detail: row.text("detail")?,
        prev_hash: row.text("prev_hash")?,
        hash: row.text("hash")?,
        signature: row.text("signature")?,
    })
}

impl Store {
    /// Appends `event` after the last stored one and returns the stored row. `seal`
    /// receives the row with everything but `hash` and `signature` filled in and
    /// fills those two.
    ///
    /// The last row is read and the new one inserted in one write transaction that
    /// holds the database's (SQLite) or the table's (PostgreSQL) write lock from the
    /// start, so two appenders, even in two processes, can never both extend the same
    /// link; the primary key on `seq` is the last line of defence against a fork.
    pub async fn append_audit(&self, event: &AuditEvent, seal: impl FnOnce(&mut AuditRow)) -> Result<AuditRow> {
        const LAST: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";
        const INSERT: &str = "INSERT INTO audit_events \
            (seq, at, actor, action, subject, detail, prev_hash, hash, signature) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        // A deferred SQLite transaction that reads first cannot upgrade to a writer once
        // another connection (the check-in writer) has committed; IMMEDIATE takes the
        // write lock up front, waiting out the busy timeout instead of failing.
        let (begin, lock) = match &self.pool {
            Pool::Sqlite(..) => ("BEGIN IMMEDIATE", None),
            Pool::Postgres(_) => ("BEGIN", Some("LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE")),
        };
        let mut row = AuditRow {
            seq: 0,
            at: event.at,
            actor: event.actor.clone(),
            action: event.action.clone(),
            subject: event.subject.clone(),
            detail: event.detail.clone(),
            prev_hash: String::new(),
            hash: String::new(),
            signature: String::new(),
        };
        on_pool!(self, p => async {
            let mut tx = p.begin_with(begin).await.map_err(on_table(AUDIT, "begin append to"))?;
            if let Some(lock) = lock {
                sqlx::query(lock).execute(&mut *tx).await.map_err(on_table(AUDIT, "lock"))?;
            }
            let last = sqlx::query(LAST)
                .fetch_optional(&mut *tx)
                .await
                .and_then(|r| r.map(|r| Ok::<_, sqlx::Error>((r.int("seq")?, r.text("hash")?))).transpose())
                .map_err(on_table(AUDIT, "read the last row of"))?;
            (row.seq, row.prev_hash) = match last {
                Some((seq, hash)) => (seq + 1, hash),
                None => (1, GENESIS_HASH.to_owned()),
            };
            seal(&mut row);
            let key = row.seq.to_string();
            sqlx::query(INSERT)
                .bind(row.seq)
                .bind(row.at)
                .bind(&row.actor)
                .bind(&row.action)
                .bind(&row.subject)
                .bind(&row.detail)
                .bind(&row.prev_hash)
                .bind(&row.hash)
                .bind(&row.signature)
                .execute(&mut *tx)
                .await
                .map_err(on_row(AUDIT, "insert", &key))?;
            tx.commit().await.map_err(on_row(AUDIT, "commit insert of", &key))
        }
        .await)?;
        Ok(row)
    }

    /// Stores the signature of an event written unsigned; a row that already has one
    /// keeps it. Returns whether the row was signed by this call.
    pub async fn sign_audit_event(&self, seq: i64, hash: &str, signature: &str) -> Result<bool> {
        const SQL: &str = "UPDATE audit_events SET signature = $1 WHERE seq = $2 AND hash = $3 AND signature = ''";
        let key = seq.to_string();
        let done = on_pool!(self, p => sqlx::query(SQL).bind(signature).bind(seq).bind(hash).execute(p).await.map(|d| d.rows_affected()))
            .map_err(on_row(AUDIT, "sign", &key))?;
        Ok(done == 1)
    }

    /// The whole chain, in `seq` order, as stored now.
    pub async fn audit_events(&self) -> Result<Vec<AuditRow>> {
        const SQL: &str = "SELECT seq, at, actor, action, subject, detail, prev_hash, hash, signature \
            FROM audit_events ORDER BY seq";
        on_pool!(self, p => columns::all(sqlx::query(SQL).fetch_all(p).await, audit_row))
            .map_err(on_table(AUDIT, "list"))
    }

    /// The last `limit` events, in `seq` order.
    pub async fn recent_audit_events(&self, limit: i64) -> Result<Vec<AuditRow>> {
        const SQL: &str = "SELECT seq, at, actor, action, subject, detail, prev_hash, hash, signature FROM \
            (SELECT seq, at, actor, action, subject, detail, prev_hash, hash, signature \
             FROM audit_events ORDER BY seq DESC LIMIT $1) AS recent ORDER BY seq";
        on_pool!(self, p => columns::all(sqlx::query(SQL).bind(limit.max(0)).fetch_all(p).await, audit_row))
            .map_err(on_table(AUDIT, "list"))
    }

    /// The newest event, if any.
    pub async fn last_audit_event(&self) -> Result<Option<AuditRow>> {
        Ok(self.recent_audit_events(1).await?.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::{AuditEvent, GENESIS_HASH};
    use crate::Store;

    fn event(action: &str) -> AuditEvent {
        AuditEvent {
            at: 1_800_000_000,
            actor: "system".into(),
            action: action.into(),
            subject: "s".into(),
            detail: r#"{"k":1}"#.into(),
        }
    }

    /// Each append links to the one before, and concurrent appends queue up instead
    /// of forking the chain.
    async fn appends_link_in_order(store: Store) {
        assert_eq!(store.last_audit_event().await.expect("last"), None);
        let first = store.append_audit(&event("one"), |r| r.hash = format!("h{}", r.seq)).await.expect("append");
        assert_eq!((first.seq, first.prev_hash.as_str(), first.hash.as_str()), (1, GENESIS_HASH, "h1"));

        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .append_audit(&event(&format!("n{i}")), |r| r.hash = format!("h{}", r.seq))
                        .await
                        .expect("append")
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let rows = store.audit_events().await.expect("list");
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=9).collect::<Vec<_>>());
        for pair in rows.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash, "event {} links to its predecessor", pair[1].seq);
        }
        let recent = store.recent_audit_events(3).await.expect("recent");
        assert_eq!(recent.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![7, 8, 9]);
        assert_eq!(store.last_audit_event().await.expect("last").map(|r| r.seq), Some(9));
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_appends_link_in_order_even_when_concurrent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("vigo.db").display());
        appends_link_in_order(Store::open(&url).await.expect("open")).await;
    }

    /// The same on PostgreSQL, in a database of its own, when `VIGO_TEST_POSTGRES_URL`
    /// names a server (see `tests/postgres.rs`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_appends_link_in_order_even_when_concurrent() {
        use sqlx::Connection as _;
        let Ok(admin_url) = std::env::var("VIGO_TEST_POSTGRES_URL") else {
            eprintln!("VIGO_TEST_POSTGRES_URL is not set: skipping");
            return;
        };
        let database = format!("vigo_audit_test_{}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("connect");
        for sql in [format!("DROP DATABASE IF EXISTS \"{database}\""), format!("CREATE DATABASE \"{database}\"")] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.expect("recreate test database");
        }
        let (base, query) = admin_url.split_once('?').map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let url = format!("{server}/{database}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
        appends_link_in_order(Store::open(&url).await.expect("open postgres store")).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{database}\"")))
            .execute(&mut admin)
            .await
            .expect("drop");
    }

    /// A signature is stored with its row; a row written unsigned can be signed once,
    /// and only for the hash it carries.
    #[tokio::test]
    async fn signatures_are_stored_and_added_only_to_unsigned_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("vigo.db").display());
        let store = Store::open(&url).await.expect("open");
        let signed = store
            .append_audit(&event("a"), |r| {
                r.hash = "h1".into();
                r.signature = "sig1".into();
            })
            .await
            .expect("append");
        assert_eq!(signed.signature, "sig1");
        store.append_audit(&event("b"), |r| r.hash = "h2".into()).await.expect("append unsigned");
        assert!(!store.sign_audit_event(1, "h1", "other").await.expect("sign"), "a signed row was re-signed");
        assert!(!store.sign_audit_event(2, "wrong", "sig2").await.expect("sign"), "signed for another hash");
        assert!(store.sign_audit_event(2, "h2", "sig2").await.expect("sign"));
        let rows = store.audit_events().await.expect("list");
        assert_eq!(rows.iter().map(|r| r.signature.as_str()).collect::<Vec<_>>(), ["sig1", "sig2"]);
        store.close().await;
    }

    #[tokio::test]
    async fn detail_must_be_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("vigo.db").display());
        let store = Store::open(&url).await.expect("open");
        let mut bad = event("x");
        bad.detail = "not json".into();
        assert!(store.append_audit(&bad, |r| r.hash = "h".into()).await.is_err());
        assert_eq!(store.audit_events().await.expect("list"), vec![]);
        store.close().await;
    }
}
