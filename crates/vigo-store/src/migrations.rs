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

    #[test]
    fn versions_increase() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.0).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(versions.first(), Some(&1));
    }
}
