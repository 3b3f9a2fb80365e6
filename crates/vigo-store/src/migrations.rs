//! Schema migrations, one SQL file per version and dialect, embedded in the binary.
//!
//! Both dialects always have the same versions; each file says what it must stay
//! equivalent to. sqlx records applied versions and their checksums, so an edited
//! migration that was already applied is refused instead of silently diverging.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::Backend;

/// `(version, description, SQLite text, PostgreSQL text)`, in version order.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "audit",
        include_str!("../migrations/sqlite/0002_audit.sql"),
        include_str!("../migrations/postgres/0002_audit.sql"),
    ),
    (
        3,
        "reports",
        include_str!("../migrations/sqlite/0003_reports.sql"),
        include_str!("../migrations/postgres/0003_reports.sql"),
    ),
    (
        4,
        "age_recipient",
        include_str!("../migrations/sqlite/0004_age_recipient.sql"),
        include_str!("../migrations/postgres/0004_age_recipient.sql"),
    ),
    (
        5,
        "vigosync",
        include_str!("../migrations/sqlite/0005_vigosync.sql"),
        include_str!("../migrations/postgres/0005_vigosync.sql"),
    ),
    (
        6,
        "hot_envoy_rows",
        include_str!("../migrations/sqlite/0006_hot_envoy_rows.sql"),
        include_str!("../migrations/postgres/0006_hot_envoy_rows.sql"),
    ),
    (
        7,
        "report_retention",
        include_str!("../migrations/sqlite/0007_report_retention.sql"),
        include_str!("../migrations/postgres/0007_report_retention.sql"),
    ),
    (
        8,
        "report_repeats",
        include_str!("../migrations/sqlite/0008_report_repeats.sql"),
        include_str!("../migrations/postgres/0008_report_repeats.sql"),
    ),
    (
        9,
        "audit_signatures",
        include_str!("../migrations/sqlite/0009_audit_signatures.sql"),
        include_str!("../migrations/postgres/0009_audit_signatures.sql"),
    ),
];

/// The migrator for one dialect.
pub(crate) fn migrator(backend: Backend) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|&(version, description, sqlite, postgres)| {
            let sql = match backend {
                Backend::Sqlite => sqlite,
                Backend::Postgres => postgres,
            };
            Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect();
    Migrator::with_migrations(migrations)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Every file under `migrations/<dialect>/` is listed, under its own version and
    /// description, so adding one without registering it fails here.
    #[test]
    fn every_migration_file_is_listed() {
        let listed: BTreeSet<String> =
            MIGRATIONS.iter().map(|(version, description, _, _)| format!("{version:04}_{description}.sql")).collect();
        for dialect in ["sqlite", "postgres"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dialect);
            let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
                .expect("migrations directory exists")
                .map(|entry| entry.expect("readable directory entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(on_disk, listed, "{}", dir.display());
        }
    }

    /// Migration 6 moves traits to their own table and a last report into `reports`,
    /// so a database written before it reads the same through the store afterwards;
    /// migration 8 starts each envoy's stored mark at its newest report.
    #[tokio::test]
    async fn hot_envoy_rows_keep_traits_and_last_report() {
        use sqlx::migrate::Migrator;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("vigo.db").display());
        let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
            .expect("url")
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.expect("open");
        let full = super::migrator(crate::Backend::Sqlite);
        let before_six: Vec<_> = full.iter().filter(|m| m.version < 6).cloned().collect();
        Migrator::with_migrations(before_six).run(&pool).await.expect("migrations 1 to 5");
        for (name, traits, report, seq) in
            [("web-1", Some(r#"{"os":"debian"}"#), Some(r#"{"run":4}"#), 4), ("web-2", None, None, 0)]
        {
            sqlx::query(
                "INSERT INTO envoys (name, signing_key, cert_fingerprint, enrolled_at, last_checkin, traits_json, \
                 last_report_json, report_seq) VALUES ($1, x'00', 'sha256:x', 10, 20, $2, $3, $4)",
            )
            .bind(name)
            .bind(traits)
            .bind(report)
            .bind(seq)
            .execute(&pool)
            .await
            .expect("legacy row");
        }
        pool.close().await;

        let store = crate::Store::open(&url).await.expect("migrate to the newest version");
        let envoys = store.envoys().await.expect("envoys");
        let got: Vec<_> = envoys
            .iter()
            .map(|e| {
                (e.name.as_str(), e.traits_json.as_deref(), e.last_report_json.as_deref(), e.report_seq, e.last_checkin)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("web-1", Some(r#"{"os":"debian"}"#), Some(r#"{"run":4}"#), 4, Some(20)),
                ("web-2", None, None, 0, Some(20))
            ]
        );
        let reports = store.reports("web-1").await.expect("reports");
        assert_eq!(reports.iter().map(|r| (r.seq, r.received_at)).collect::<Vec<_>>(), [(4, 20)]);
        // Migration 8: what was stored counts as stored; nothing repeats yet.
        let marks: Vec<_> = envoys.iter().map(|e| (e.reports_stored, e.repeats)).collect();
        assert_eq!(marks, [(4, None), (0, None)]);
    }

    #[test]
    fn versions_increase() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.0).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(versions.first(), Some(&1));
    }
}
