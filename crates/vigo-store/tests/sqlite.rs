//! The store on real SQLite files in temporary directories: the shared scenarios, plus
//! what only a file can show (WAL mode, reopening, creation).

mod common;

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use tempfile::TempDir;
use vigo_store::{Backend, Store, StoreError, WriteOp};

struct Fixture {
    store: Store,
    _dir: TempDir,
}

impl Fixture {
    async fn finish(self) {
        self.store.close().await;
    }
}

fn url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("vigo.db").display())
}

async fn fresh() -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&url(&dir)).await.expect("open fresh sqlite store");
    Some(Fixture { store, _dir: dir })
}

every_scenario!(fresh);

#[tokio::test]
async fn opens_a_new_file_in_wal_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vigo.db");
    let store = Store::open(&format!("sqlite://{}", path.display())).await.expect("open");
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(path.is_file(), "database file created");

    // WAL is a property of the file, so a separate connection sees it.
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("second connection");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.expect("journal mode");
    assert_eq!(mode, "wal");
    conn.close().await.expect("close");
    store.close().await;
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&url(&dir)).await.expect("open");
    store.insert_token(&common::token("t1")).await.expect("token");
    assert!(store.use_token("t1", "web-1", common::NOW).await.expect("use"));
    store.insert_admin_token("admin", &"ab".repeat(32), common::NOW).await.expect("admin");
    store.insert_envoy(&common::envoy("web-1")).await.expect("envoy");
    store
        .apply_batch(&common::check_in("web-1", common::NOW + 1, Some("{}"), Some((1, "[]"))))
        .await
        .expect("check in");
    store.insert_version(&common::version(1), &[common::bundle(1, "base")]).await.expect("publish");
    let before = (
        store.tokens().await.expect("tokens"),
        store.admin_tokens().await.expect("admin tokens"),
        store.envoys().await.expect("envoys"),
        store.versions().await.expect("versions"),
        store.bundles(1).await.expect("bundles"),
    );
    store.close().await;

    // Opening again re-runs migrations, which must be a no-op on an up-to-date file.
    let store = Store::open(&url(&dir)).await.expect("reopen");
    let after = (
        store.tokens().await.expect("tokens"),
        store.admin_tokens().await.expect("admin tokens"),
        store.envoys().await.expect("envoys"),
        store.versions().await.expect("versions"),
        store.bundles(1).await.expect("bundles"),
    );
    assert_eq!(after, before);
    assert_eq!(after.2[0].report_seq, 1);
    assert!(!store.use_token("t1", "web-2", common::NOW).await.expect("use after reopen"));
    store.close().await;
}

#[tokio::test]
async fn vigosync_seen_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&url(&dir)).await.expect("open");
    store.insert_envoy(&common::envoy("web-1")).await.expect("envoy");
    let rows = vec![common::seen("web-1", "alice", "a.txt", 1, "aa"), common::seen("web-1", "bob", "b.txt", 2, "bb")];
    store.apply_batch(&[WriteOp::VigosyncSeen(rows.clone())]).await.expect("seen");
    store.close().await;
    let store = Store::open(&url(&dir)).await.expect("reopen");
    assert_eq!(store.vigosync_seen().await.expect("seen"), rows);
    store.close().await;
}

#[tokio::test]
async fn open_errors_name_the_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = format!("sqlite://{}/no/such/dir/vigo.db", dir.path().display());
    let err = Store::open(&missing).await.expect_err("missing parent directory");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing), "{err}");

    let err = Store::open("mysql://root:hunter2@db/vigo").await.expect_err("unsupported");
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("mysql://root:***@db/vigo"), "{message}");
    assert!(!message.contains("hunter2"), "password leaked: {message}");
}

#[tokio::test]
async fn clones_share_one_database() {
    let fixture = fresh().await.expect("fixture");
    let clone = fixture.store.clone();
    clone.insert_envoy(&common::envoy("web-1")).await.expect("insert through clone");
    assert!(common::envoy_named(&fixture.store, "web-1").await.is_some());
    fixture.finish().await;
}
