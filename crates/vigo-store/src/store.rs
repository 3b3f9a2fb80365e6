//! The [`Store`]: opening either backend, and every read and write the server makes.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::columns;
use crate::error::{Result, StoreError, on_row, on_table, redact};
use crate::migrations;
use crate::rows::{AdminTokenRow, BundleRow, EnvoyRow, Repeats, ReportRow, SeenRow, TokenRow, VersionRow, WriteOp};

/// How long an SQLite writer waits for another connection's write lock before failing;
/// writes are short, so this only runs out when something is badly wrong.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// WAL lets readers run beside the one writer; a few connections cover the server's
/// REST readers plus its batching writer.
const SQLITE_CONNECTIONS: u32 = 4;
/// Page cache of the connection that writes batches, in KiB when negative (SQLite's
/// default is 2 MiB): the envoys table and the reports index stay in memory.
const BATCH_CACHE_SIZE: &str = "-32768";
/// WAL pages after which a batch's commit copies the WAL back into the database (the
/// default is 1000). Batches rewrite the same hot pages (envoy rows, the reports index)
/// over and over; a larger WAL writes each of them to the database once per checkpoint
/// instead of once per batch or two.
const BATCH_AUTOCHECKPOINT: &str = "8192";
const POSTGRES_CONNECTIONS: u32 = 8;

const TOKENS: &str = "enrollment_tokens";
const ADMIN_TOKENS: &str = "admin_tokens";
const ENVOYS: &str = "envoys";
const ENVOY_TRAITS: &str = "envoy_traits";
const VERSIONS: &str = "versions";
const BUNDLES: &str = "bundles";
const REPORTS: &str = "reports";
const VIGOSYNC_SEEN: &str = "vigosync_seen";

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the server's database; cheap to clone, all clones share one pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
}

#[derive(Clone, Debug)]
enum Pool {
    /// The shared pool, and the one connection that writes batches. A connection's page
    /// cache is dropped whenever another connection has written to the file, so batches
    /// written in turn by every pooled connection would read their pages from the file
    /// again each time; the batch connection keeps its cache because it is the writer.
    Sqlite(SqlitePool, SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code against whichever typed pool backs the store. Each arm is
/// type-checked against its own driver, so a value one driver cannot carry fails to
/// compile instead of failing at run time.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool, _) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// [`on_pool!`] on the pool that writes batches.
macro_rules! on_batch_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite(_, $pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

mod audit;
pub use audit::{AuditEvent, AuditRow, GENESIS_HASH};

impl Store {
    /// Opens the database at `url`, creating an SQLite file if it is missing, and brings
    /// its schema up to date.
    ///
    /// `url` is `sqlite:///abs/path/vigo.db` or `postgres://user@host/db` (also
    /// `postgresql://`). SQLite runs in WAL mode with foreign keys enforced.
    pub async fn open(url: &str) -> Result<Store> {
        let shown = redact(url);
        let invalid = |source| StoreError::InvalidUrl { url: shown.clone(), source };
        let failed = |source| StoreError::Open { url: shown.clone(), source };
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(invalid)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(BUSY_TIMEOUT);
            let pool = SqlitePoolOptions::new()
                .max_connections(SQLITE_CONNECTIONS)
                .connect_with(options.clone())
                .await
                .map_err(failed)?;
            // Checked out for one batch at a time by one task; a local file needs no
            // liveness ping before each use.
            let batches = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                .connect_with(
                    options.pragma("cache_size", BATCH_CACHE_SIZE).pragma("wal_autocheckpoint", BATCH_AUTOCHECKPOINT),
                )
                .await
                .map_err(failed)?;
            Pool::Sqlite(pool, batches)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(invalid)?;
            let pool = PgPoolOptions::new()
                .max_connections(POSTGRES_CONNECTIONS)
                .connect_with(options)
                .await
                .map_err(failed)?;
            Pool::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl { url: shown });
        };
        let store = Store { pool };
        let migrator = migrations::migrator(store.backend());
        on_pool!(store, p => migrator.run(p).await).map_err(|source| StoreError::Migrate { url: shown, source })?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(..) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes every connection once in-flight statements finish; SQLite folds its WAL
    /// back into the main file. Every clone of this store is closed with it.
    pub async fn close(&self) {
        if let Pool::Sqlite(_, batches) = &self.pool {
            batches.close().await;
        }
        on_pool!(self, p => p.close().await)
    }

    // ---- enrollment tokens ----

    pub async fn insert_token(&self, t: &TokenRow) -> Result<()> {
        const SQL: &str = "INSERT INTO enrollment_tokens \
            (id, hash, hosts, created_at, expires_at, used_at, used_by, revoked) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        on_pool!(self, p => sqlx::query(SQL)
            .bind(&t.id)
            .bind(&t.hash)
            .bind(&t.hosts)
            .bind(t.created_at)
            .bind(t.expires_at)
            .bind(t.used_at)
            .bind(&t.used_by)
            .bind(t.revoked)
            .execute(p)
            .await
            .map(drop))
        .map_err(on_row(TOKENS, "insert", &t.id))
    }

    /// Every enrollment token, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        const SQL: &str = "SELECT id, hash, hosts, created_at, expires_at, used_at, used_by, revoked \
            FROM enrollment_tokens ORDER BY created_at, id";
        on_pool!(self, p => columns::all(sqlx::query(SQL).fetch_all(p).await, columns::token))
            .map_err(on_table(TOKENS, "list"))
    }

    /// Spends token `id` for `envoy`. True only for the one caller that finds it unused,
    /// not revoked and not expired at `now`: the check and the write are one statement,
    /// so concurrent enrollments cannot both win.
    pub async fn use_token(&self, id: &str, envoy: &str, now: i64) -> Result<bool> {
        const SQL: &str = "UPDATE enrollment_tokens SET used_at = $3, used_by = $2 \
            WHERE id = $1 AND used_at IS NULL AND revoked = FALSE \
            AND (expires_at IS NULL OR expires_at > $3)";
        on_pool!(self, p => sqlx::query(SQL)
            .bind(id)
            .bind(envoy)
            .bind(now)
            .execute(p)
            .await
            .map(|done| done.rows_affected() == 1))
        .map_err(on_row(TOKENS, "use", id))
    }

    /// Revokes token `id`; true when it exists (revoking twice is not an error).
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        const SQL: &str = "UPDATE enrollment_tokens SET revoked = TRUE WHERE id = $1";
        on_pool!(self, p => sqlx::query(SQL)
            .bind(id)
            .execute(p)
            .await
            .map(|done| done.rows_affected() == 1))
        .map_err(on_row(TOKENS, "revoke", id))
    }

    // ---- admin tokens ----

    pub async fn insert_admin_token(&self, id: &str, sha256_hex: &str, created_at: i64) -> Result<()> {
        const SQL: &str = "INSERT INTO admin_tokens (id, sha256, created_at) VALUES ($1, $2, $3)";
        on_pool!(self, p => sqlx::query(SQL)
            .bind(id)
            .bind(sha256_hex)
            .bind(created_at)
            .execute(p)
            .await
            .map(drop))
        .map_err(on_row(ADMIN_TOKENS, "insert", id))
    }

    /// Every admin token, oldest first.
    pub async fn admin_tokens(&self) -> Result<Vec<AdminTokenRow>> {
        const SQL: &str = "SELECT id, sha256, created_at FROM admin_tokens ORDER BY created_at, id";
        on_pool!(self, p => columns::all(sqlx::query(SQL).fetch_all(p).await, columns::admin_token))
            .map_err(on_table(ADMIN_TOKENS, "list"))
    }

    // ---- envoys ----

    /// Enrolls an envoy. A revoked envoy of the same name is replaced whole (new key,
    /// no history); an active one is left alone and [`StoreError::Conflict`] returned.
    /// Traits and a last report given in `e` are stored with it.
    pub async fn insert_envoy(&self, e: &EnvoyRow) -> Result<()> {
        // One statement, so two enrollments racing for a revoked name cannot both replace it.
        const SQL: &str = "INSERT INTO envoys \
            (name, signing_key, cert_fingerprint, enrolled_at, revoked_at, last_checkin, policy_version, age_recipient, \
             report_repeats, report_last_seq, report_last_at, report_stored) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
            ON CONFLICT (name) DO UPDATE SET \
             signing_key = excluded.signing_key, \
             cert_fingerprint = excluded.cert_fingerprint, \
             enrolled_at = excluded.enrolled_at, \
             revoked_at = excluded.revoked_at, \
             last_checkin = excluded.last_checkin, \
             policy_version = excluded.policy_version, \
             age_recipient = excluded.age_recipient, \
             report_repeats = excluded.report_repeats, \
             report_last_seq = excluded.report_last_seq, \
             report_last_at = excluded.report_last_at, \
             report_stored = excluded.report_stored \
            WHERE envoys.revoked_at IS NOT NULL";
        // A replaced envoy starts without history: its old reports and traits go in the
        // same transaction, or the new incarnation's sequence numbers would collide with
        // them. What it had seen of vigosync goes too: a reinstalled host gets every file again.
        const FORGET: [&str; 3] = [
            "DELETE FROM reports WHERE envoy = $1",
            "DELETE FROM envoy_traits WHERE envoy = $1",
            "DELETE FROM vigosync_seen WHERE envoy = $1",
        ];
        const TRAITS: &str = "INSERT INTO envoy_traits (envoy, traits_json) VALUES ($1, $2)";
        const REPORT: &str = "INSERT INTO reports (envoy, seq, received_at, report_json) VALUES ($1, $2, $3, $4)";
        if let Some(bad) = [("traits_json", &e.traits_json), ("last_report_json", &e.last_report_json)]
            .into_iter()
            .find_map(|(column, text)| text.as_deref().is_some_and(|t| !is_json(t)).then_some(column))
        {
            return Err(StoreError::NotJson { table: ENVOYS, key: e.name.clone(), column: bad });
        }
        on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let written = sqlx::query(SQL)
                .bind(&e.name)
                .bind(&e.signing_key)
                .bind(&e.cert_fingerprint)
                .bind(e.enrolled_at)
                .bind(e.revoked_at)
                .bind(e.last_checkin)
                .bind(&e.policy_version)
                .bind(&e.age_recipient)
                .bind(e.repeats.map_or(0, |r| r.count))
                .bind(e.repeats.map(|r| r.last_seq))
                .bind(e.repeats.map(|r| r.last_at))
                .bind(e.reports_stored)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if written == 0 {
                return Ok(false);
            }
            for forget in FORGET {
                sqlx::query(forget).bind(&e.name).execute(&mut *tx).await?;
            }
            if let Some(traits) = &e.traits_json {
                sqlx::query(TRAITS).bind(&e.name).bind(traits).execute(&mut *tx).await?;
            }
            if let Some(report) = &e.last_report_json
                && e.report_seq > 0
            {
                let at = e.last_checkin.unwrap_or(e.enrolled_at);
                sqlx::query(REPORT).bind(&e.name).bind(e.report_seq).bind(at).bind(report).execute(&mut *tx).await?;
            }
            tx.commit().await.map(|()| true)
        }
        .await)
        .map_err(on_row(ENVOYS, "insert", &e.name))?
        .then_some(())
        .ok_or_else(|| StoreError::Conflict { table: ENVOYS, key: e.name.clone() })
    }

    /// Every envoy, by name, with its traits and its newest report (and that report's repeats).
    pub async fn envoys(&self) -> Result<Vec<EnvoyRow>> {
        const SQL: &str = "SELECT e.name, e.signing_key, e.cert_fingerprint, e.enrolled_at, e.revoked_at, \
            e.last_checkin, t.traits_json, e.policy_version, r.report_json AS last_report_json, \
            COALESCE(r.seq, 0) AS report_seq, e.age_recipient, \
            e.report_repeats, e.report_last_seq, e.report_last_at, e.report_stored \
            FROM envoys e \
            LEFT JOIN envoy_traits t ON t.envoy = e.name \
            LEFT JOIN reports r ON r.envoy = e.name AND r.seq = (SELECT MAX(seq) FROM reports WHERE envoy = e.name) \
            ORDER BY e.name";
        on_pool!(self, p => columns::all(sqlx::query(SQL).fetch_all(p).await, columns::envoy))
            .map_err(on_table(ENVOYS, "list"))
    }

    /// Revokes envoy `name` at `at`; true when it exists. Revoking twice keeps the first time.
    pub async fn revoke_envoy(&self, name: &str, at: i64) -> Result<bool> {
        const SQL: &str = "UPDATE envoys SET revoked_at = COALESCE(revoked_at, $2) WHERE name = $1";
        on_pool!(self, p => sqlx::query(SQL)
            .bind(name)
            .bind(at)
            .execute(p)
            .await
            .map(|done| done.rows_affected() == 1))
        .map_err(on_row(ENVOYS, "revoke", name))
    }

    /// Applies every op in one transaction: all of them or, on error, none.
    pub async fn apply_batch(&self, ops: &[WriteOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        // Checked before anything is written, so a bad value is named and the batch
        // refused whole instead of failing inside a statement that covers many envoys.
        for op in ops {
            match op {
                WriteOp::CheckIn { envoy, traits_json: Some(t), .. } if !is_json(t) => {
                    return Err(StoreError::NotJson { table: ENVOYS, key: envoy.clone(), column: "traits_json" });
                }
                WriteOp::Reports { envoy, reports, .. } => {
                    if let Some(r) = reports.iter().find(|r| !is_json(&r.json)) {
                        let key = format!("{envoy}/{}", r.seq);
                        return Err(StoreError::NotJson { table: REPORTS, key, column: "report_json" });
                    }
                }
                _ => {}
            }
        }
        let check_ins = merge_check_ins(ops);
        // A row for an unknown envoy is a no-op rather than a foreign-key failure that
        // would lose the whole batch.
        const TRAITS: &str = "INSERT INTO envoy_traits (envoy, traits_json) \
            SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM envoys WHERE name = $1) \
            ON CONFLICT (envoy) DO UPDATE SET traits_json = excluded.traits_json";
        // Seen versions only move forward (row values compare mtime, then hash, as the
        // server does); the SELECT makes a row for an unknown envoy a no-op rather than
        // a foreign-key failure that would lose the whole batch.
        const SEEN: &str = "INSERT INTO vigosync_seen (envoy, username, name, mtime, sha256) \
            SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM envoys WHERE name = $1) \
            ON CONFLICT (envoy, username, name) DO UPDATE SET mtime = excluded.mtime, sha256 = excluded.sha256 \
            WHERE (excluded.mtime, excluded.sha256) > (vigosync_seen.mtime, vigosync_seen.sha256)";
        const CLOSE: &str =
            "UPDATE reports SET repeats = $3, last_seq = $4, last_at = $5 WHERE envoy = $1 AND seq = $2";
        on_batch_pool!(self, p => async {
            let mut tx = p.begin().await.map_err(on_table(ENVOYS, "begin batch on"))?;
            for chunk in check_ins.chunks(CHECK_INS_PER_STATEMENT) {
                // Built from constant text and a row count only; every value is bound.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(check_in_sql(chunk.len(), self.backend())));
                for c in chunk {
                    query = query.bind(c.envoy).bind(c.at).bind(c.policy_version);
                }
                let first = chunk.first().map_or("", |c| c.envoy);
                query.execute(&mut *tx).await.map_err(on_row(ENVOYS, "record check-ins from", first))?;
            }
            // Traits arrive on an envoy's first check-in and when they change: rarely.
            for c in &check_ins {
                if let Some(traits) = c.traits_json {
                    sqlx::query(TRAITS)
                        .bind(c.envoy)
                        .bind(traits)
                        .execute(&mut *tx)
                        .await
                        .map_err(on_row(ENVOY_TRAITS, "upsert", c.envoy))?;
                }
            }
            let reports: Vec<_> = ops
                .iter()
                .filter_map(|op| match op {
                    WriteOp::Reports { envoy, at, reports, .. } => Some(reports.iter().map(move |r| (envoy, *at, r))),
                    _ => None,
                })
                .flatten()
                .collect();
            for chunk in reports.chunks(REPORTS_PER_STATEMENT) {
                // Built from constant text and a row count only; every value is bound.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(reports_sql(chunk.len(), self.backend())));
                for (envoy, at, r) in chunk {
                    query = query
                        .bind(envoy.as_str())
                        .bind(r.seq)
                        .bind(*at)
                        .bind(r.json.as_str())
                        .bind(r.repeats.map_or(0, |x| x.count))
                        .bind(r.repeats.map(|x| x.last_seq))
                        .bind(r.repeats.map(|x| x.last_at));
                }
                let first = chunk.first().map_or(String::new(), |(envoy, _, r)| format!("{envoy}/{}", r.seq));
                query.execute(&mut *tx).await.map_err(on_row(REPORTS, "insert", &first))?;
            }
            // After the inserts: a row may close in the batch that stored it. A row
            // that was never stored closes nothing.
            for op in ops {
                if let WriteOp::Reports { envoy, closes: Some((seq, r)), .. } = op {
                    sqlx::query(CLOSE)
                        .bind(envoy)
                        .bind(seq)
                        .bind(r.count)
                        .bind(r.last_seq)
                        .bind(r.last_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(on_row(REPORTS, "record repeats of", &format!("{envoy}/{seq}")))?;
                }
            }
            let open = merge_open(ops);
            for chunk in open.chunks(CHECK_INS_PER_STATEMENT) {
                // Built from constant text and a row count only; every value is bound.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(open_sql(chunk.len(), self.backend())));
                for (envoy, (seq, r)) in chunk {
                    query = query
                        .bind(*envoy)
                        .bind(*seq)
                        .bind(r.map_or(0, |x| x.count))
                        .bind(r.map(|x| x.last_seq))
                        .bind(r.map(|x| x.last_at));
                }
                let first = chunk.first().map_or("", |(envoy, _)| envoy);
                query.execute(&mut *tx).await.map_err(on_row(ENVOYS, "record repeats of", first))?;
            }
            // Stored marks: one statement for the envoys with one delivery in the batch;
            // one per delivery, in order, for the others (each depends on the one before).
            let (single, several) = stored_marks(ops);
            let several = several.chunks(1);
            for chunk in single.chunks(CHECK_INS_PER_STATEMENT).chain(several) {
                // Built from constant text and a row count only; every value is bound.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(stored_sql(chunk.len(), self.backend())));
                for (envoy, (base, highest)) in chunk {
                    query = query.bind(*envoy).bind(*base).bind(*highest);
                }
                let first = chunk.first().map_or("", |(envoy, _)| envoy);
                query.execute(&mut *tx).await.map_err(on_row(ENVOYS, "record stored reports of", first))?;
            }
            for op in ops {
                match op {
                    WriteOp::CheckIn { .. } | WriteOp::Reports { .. } => {}
                    WriteOp::VigosyncSeen(rows) => {
                        for r in rows {
                            sqlx::query(SEEN)
                                .bind(&r.envoy)
                                .bind(&r.user)
                                .bind(&r.name)
                                .bind(r.mtime)
                                .bind(&r.sha256)
                                .execute(&mut *tx)
                                .await
                                .map_err(on_row(VIGOSYNC_SEEN, "upsert", &format!("{}/{}/{}", r.envoy, r.user, r.name)))?;
                        }
                    }
                }
            }
            tx.commit().await.map_err(on_table(ENVOYS, "commit batch on"))
        }
        .await)
    }

    /// The reports envoy `name` delivered, by sequence number, each with the runs that
    /// repeated its outcome.
    pub async fn reports(&self, name: &str) -> Result<Vec<ReportRow>> {
        self.recent_reports(name, i64::MAX).await
    }

    /// The newest `limit` reports of envoy `name`, by sequence number, each with the
    /// runs that repeated its outcome.
    pub async fn recent_reports(&self, name: &str, limit: i64) -> Result<Vec<ReportRow>> {
        // One statement, so that the newest row and the envoy's open streak agree.
        const SQL: &str = "SELECT r.envoy, r.seq, r.received_at, r.report_json, r.repeats, r.last_seq, r.last_at, \
            e.report_repeats, e.report_last_seq, e.report_last_at \
            FROM reports r JOIN envoys e ON e.name = r.envoy WHERE r.envoy = $1 ORDER BY r.seq DESC LIMIT $2";
        let rows: Vec<(ReportRow, Option<Repeats>)> = on_pool!(self, p => columns::all(
            sqlx::query(SQL).bind(name).bind(limit.max(0)).fetch_all(p).await,
            columns::report_and_open
        ))
        .map_err(on_row(REPORTS, "list", name))?;
        let mut reports: Vec<ReportRow> = rows
            .into_iter()
            .enumerate()
            .map(|(i, (mut report, open))| {
                if i == 0 {
                    report.repeats = open;
                }
                report
            })
            .collect();
        reports.reverse();
        Ok(reports)
    }

    /// Deletes at most `limit` reports received and last repeated before `before`, oldest
    /// first, and returns how many went. An envoy's newest report is kept whatever its age: it is the
    /// envoy's last report.
    pub async fn prune_reports(&self, before: i64, limit: i64) -> Result<u64> {
        const SQL: &str = "DELETE FROM reports WHERE (envoy, seq) IN (\
            SELECT r.envoy, r.seq FROM reports r \
            WHERE r.received_at < $1 AND COALESCE(r.last_at, r.received_at) < $1 \
            AND r.seq < (SELECT MAX(n.seq) FROM reports n WHERE n.envoy = r.envoy) \
            ORDER BY r.received_at LIMIT $2)";
        on_pool!(self, p => sqlx::query(SQL).bind(before).bind(limit).execute(p).await.map(|done| done.rows_affected()))
            .map_err(on_table(REPORTS, "prune"))
    }

    /// Every vigosync version any envoy has seen, by envoy, user and name.
    pub async fn vigosync_seen(&self) -> Result<Vec<SeenRow>> {
        const SQL: &str =
            "SELECT envoy, username, name, mtime, sha256 FROM vigosync_seen ORDER BY envoy, username, name";
        on_pool!(self, p => columns::all(sqlx::query(SQL).fetch_all(p).await, columns::seen))
            .map_err(on_table(VIGOSYNC_SEEN, "list"))
    }

    // ---- versions and bundles ----

    /// Records publish `v` with its bundles in one transaction and makes it the only
    /// active version, whatever `v.active` says.
    pub async fn insert_version(&self, v: &VersionRow, bundles: &[BundleRow]) -> Result<()> {
        if let Some(b) = bundles.iter().find(|b| b.number != v.number) {
            return Err(StoreError::BundleMismatch { version: v.number, bundle: b.number, set_key: b.set_key.clone() });
        }
        const DEACTIVATE: &str = "UPDATE versions SET active = FALSE WHERE active = TRUE";
        const INSERT_VERSION: &str =
            "INSERT INTO versions (number, message, created_at, active) VALUES ($1, $2, $3, TRUE)";
        const INSERT_BUNDLE: &str = "INSERT INTO bundles (number, set_key, version, payload, signature) \
            VALUES ($1, $2, $3, $4, $5)";
        let number = v.number.to_string();
        on_pool!(self, p => async {
            let mut tx = p.begin().await.map_err(on_row(VERSIONS, "begin insert of", &number))?;
            // Deactivating first keeps the one-active index satisfied at every step.
            sqlx::query(DEACTIVATE)
                .execute(&mut *tx)
                .await
                .map_err(on_table(VERSIONS, "deactivate"))?;
            sqlx::query(INSERT_VERSION)
                .bind(v.number)
                .bind(&v.message)
                .bind(v.created_at)
                .execute(&mut *tx)
                .await
                .map_err(on_row(VERSIONS, "insert", &number))?;
            for b in bundles {
                sqlx::query(INSERT_BUNDLE)
                    .bind(b.number)
                    .bind(&b.set_key)
                    .bind(&b.version)
                    .bind(&b.payload)
                    .bind(&b.signature)
                    .execute(&mut *tx)
                    .await
                    .map_err(on_row(BUNDLES, "insert", &format!("{number}/{}", b.set_key)))?;
            }
            tx.commit().await.map_err(on_row(VERSIONS, "commit insert of", &number))
        }
        .await)
    }

    /// Every version, newest first.
    pub async fn versions(&self) -> Result<Vec<VersionRow>> {
        const SQL: &str = "SELECT number, message, created_at, active FROM versions ORDER BY number DESC";
        on_pool!(self, p => columns::all(sqlx::query(SQL).fetch_all(p).await, columns::version))
            .map_err(on_table(VERSIONS, "list"))
    }

    /// The version envoys are served, if anything was ever published.
    pub async fn active_version(&self) -> Result<Option<VersionRow>> {
        const SQL: &str = "SELECT number, message, created_at, active FROM versions WHERE active = TRUE";
        on_pool!(self, p => match sqlx::query(SQL).fetch_optional(p).await {
            Ok(Some(row)) => columns::version(&row).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        })
        .map_err(on_table(VERSIONS, "read the active row of"))
    }

    /// The bundles of version `number`, by set key; empty for an unknown number.
    pub async fn bundles(&self, number: i64) -> Result<Vec<BundleRow>> {
        const SQL: &str = "SELECT number, set_key, version, payload, signature \
            FROM bundles WHERE number = $1 ORDER BY set_key";
        on_pool!(self, p => columns::all(sqlx::query(SQL).bind(number).fetch_all(p).await, columns::bundle))
            .map_err(on_row(BUNDLES, "list", &number.to_string()))
    }
}

/// Envoys updated by one statement: three parameters each, well inside the limits of
/// both databases, and few statements for a full batch.
const CHECK_INS_PER_STATEMENT: usize = 200;
/// Reports inserted by one statement (four parameters each).
const REPORTS_PER_STATEMENT: usize = 250;

/// What a run of check-ins leaves on one envoy's row.
#[derive(Debug, PartialEq, Eq)]
struct MergedCheckIn<'a> {
    envoy: &'a str,
    at: i64,
    policy_version: &'a str,
    traits_json: Option<&'a str>,
}

/// Folds a batch's check-ins into one per envoy, in order of first appearance, with the
/// effect of applying them one after another: the last time, policy version and traits
/// sent.
fn merge_check_ins(ops: &[WriteOp]) -> Vec<MergedCheckIn<'_>> {
    let mut merged: Vec<MergedCheckIn<'_>> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for op in ops {
        let WriteOp::CheckIn { envoy, at, traits_json, policy_version } = op else { continue };
        match index.get(envoy.as_str()) {
            Some(&i) => {
                let m = &mut merged[i];
                m.at = *at;
                m.policy_version = policy_version;
                if traits_json.is_some() {
                    m.traits_json = traits_json.as_deref();
                }
            }
            None => {
                index.insert(envoy, merged.len());
                merged.push(MergedCheckIn { envoy, at: *at, policy_version, traits_json: traits_json.as_deref() });
            }
        }
    }
    merged
}

/// One UPDATE for `rows` envoys (each named once).
fn check_in_sql(rows: usize, backend: Backend) -> String {
    let mut sql = String::from("WITH v (name, at, policy_version) AS (VALUES ");
    push_rows(&mut sql, rows, &["TEXT", "BIGINT", "TEXT"], backend);
    sql.push_str(
        ") UPDATE envoys SET last_checkin = v.at, policy_version = v.policy_version \
         FROM v WHERE envoys.name = v.name",
    );
    sql
}

/// One INSERT of `rows` queued reports; a report already stored for its `(envoy, seq)`
/// (a resend) is skipped.
fn reports_sql(rows: usize, backend: Backend) -> String {
    let mut sql =
        String::from("INSERT INTO reports (envoy, seq, received_at, report_json, repeats, last_seq, last_at) VALUES ");
    push_rows(&mut sql, rows, &["TEXT", "BIGINT", "BIGINT", "TEXT", "BIGINT", "BIGINT", "BIGINT"], backend);
    sql.push_str(" ON CONFLICT (envoy, seq) DO NOTHING");
    sql
}

/// The open streak a batch leaves on each envoy, in order of first appearance: the one
/// furthest along when an envoy has several (a late write never moves it back).
fn merge_open(ops: &[WriteOp]) -> Vec<(&str, (i64, Option<Repeats>))> {
    let reach = |(seq, r): &(i64, Option<Repeats>)| (*seq, r.map_or(*seq, |r| r.last_seq));
    let mut merged: Vec<(&str, (i64, Option<Repeats>))> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for op in ops {
        let WriteOp::Reports { envoy, open, .. } = op else { continue };
        match index.get(envoy.as_str()) {
            Some(&i) if reach(open) > reach(&merged[i].1) => merged[i].1 = *open,
            Some(_) => {}
            None => {
                index.insert(envoy, merged.len());
                merged.push((envoy, *open));
            }
        }
    }
    merged
}

/// The stored-mark updates of a batch's deliveries, as `(envoy, (base, highest))`:
/// those of envoys with one delivery in the batch, and, in batch order, the others.
#[allow(clippy::type_complexity)]
fn stored_marks(ops: &[WriteOp]) -> (Vec<(&str, (i64, i64))>, Vec<(&str, (i64, i64))>) {
    let mut deliveries: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for op in ops {
        if let WriteOp::Reports { envoy, .. } = op {
            *deliveries.entry(envoy.as_str()).or_default() += 1;
        }
    }
    ops.iter()
        .filter_map(|op| match op {
            WriteOp::Reports { envoy, through, .. } => Some((envoy.as_str(), *through)),
            _ => None,
        })
        .partition(|(envoy, _)| deliveries.get(envoy) == Some(&1))
}

/// One UPDATE of `rows` envoys' stored marks (each named once): a mark moves to
/// `highest` only from `base` or beyond.
fn stored_sql(rows: usize, backend: Backend) -> String {
    let mut sql = String::from("WITH v (name, base, highest) AS (VALUES ");
    push_rows(&mut sql, rows, &["TEXT", "BIGINT", "BIGINT"], backend);
    sql.push_str(
        ") UPDATE envoys SET report_stored = v.highest FROM v \
         WHERE envoys.name = v.name AND envoys.report_stored >= v.base AND envoys.report_stored < v.highest",
    );
    sql
}

/// One UPDATE of `rows` envoys' open streaks (each named once), each written only
/// while the row it counts for is the envoy's newest stored report.
fn open_sql(rows: usize, backend: Backend) -> String {
    let mut sql = String::from("WITH v (name, seq, repeats, last_seq, last_at) AS (VALUES ");
    push_rows(&mut sql, rows, &["TEXT", "BIGINT", "BIGINT", "BIGINT", "BIGINT"], backend);
    sql.push_str(
        ") UPDATE envoys SET report_repeats = v.repeats, report_last_seq = v.last_seq, report_last_at = v.last_at \
         FROM v WHERE envoys.name = v.name AND v.seq = (SELECT MAX(r.seq) FROM reports r WHERE r.envoy = v.name)",
    );
    sql
}

/// Appends `rows` parenthesised rows of parameters, one per column type in `types`. The
/// casts give PostgreSQL the parameters' types, which a VALUES list does not. SQLite gets
/// anonymous `?` parameters: it looks numbered ones up by a linear search each, which
/// grows with the square of a statement's parameters.
fn push_rows(sql: &mut String, rows: usize, types: &[&str], backend: Backend) {
    use std::fmt::Write as _;
    let mut next = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for (i, ty) in types.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            next += 1;
            let _ = match backend {
                Backend::Sqlite => write!(sql, "CAST(? AS {ty})"),
                Backend::Postgres => write!(sql, "CAST(${next} AS {ty})"),
            };
        }
        sql.push(')');
    }
}

/// Whether `text` is one JSON value (what the JSON columns' constraints accept). Writers
/// that share a batch check their values with it first, so that one bad value is refused
/// alone instead of failing everyone's transaction.
pub fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}
