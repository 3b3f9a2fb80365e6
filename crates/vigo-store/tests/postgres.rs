//! The shared scenarios against a real PostgreSQL server.
//!
//! Runs only when `VIGO_TEST_POSTGRES_URL` is set, e.g.
//! `VIGO_TEST_POSTGRES_URL=postgres://vigo@localhost/postgres cargo test -p vigo-store --test postgres`.
//! The role needs CREATEDB: every scenario runs in a database of its own,
//! `vigo_test_<pid>_<n>`, dropped afterwards (left behind only when the scenario fails).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use vigo_store::{Backend, Store};

const URL_VAR: &str = "VIGO_TEST_POSTGRES_URL";

struct Fixture {
    store: Store,
    admin_url: String,
    database: String,
}

impl Fixture {
    async fn finish(self) {
        self.store.close().await;
        let mut admin = PgConnection::connect(&self.admin_url).await.expect("admin connection");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{}\"", self.database)))
            .execute(&mut admin)
            .await
            .expect("drop test database");
    }
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    format!("{host_part}/{database}{query}")
}

async fn fresh() -> Option<Fixture> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let Ok(admin_url) = std::env::var(URL_VAR) else {
        eprintln!("{URL_VAR} is not set: skipping the PostgreSQL scenario");
        return None;
    };
    let database = format!("vigo_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let mut admin = PgConnection::connect(&admin_url).await.expect("connect to VIGO_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{database}\"")))
        .execute(&mut admin)
        .await
        .expect("drop stale test database");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
        .execute(&mut admin)
        .await
        .expect("create test database (the role needs CREATEDB)");
    admin.close().await.expect("close admin connection");

    let store = Store::open(&with_database(&admin_url, &database)).await.expect("open postgres store");
    assert_eq!(store.backend(), Backend::Postgres);
    Some(Fixture { store, admin_url, database })
}

every_scenario!(fresh);

#[tokio::test]
async fn reopening_keeps_data_and_migrations() {
    let Some(fixture) = fresh().await else { return };
    fixture.store.insert_envoy(&common::envoy("web-1")).await.expect("insert");
    let seen = vec![common::seen("web-1", "alice", "a.txt", 1, "aa")];
    fixture.store.apply_batch(&[vigo_store::WriteOp::VigosyncSeen(seen.clone())]).await.expect("seen");
    let url = with_database(&fixture.admin_url, &fixture.database);
    let again = Store::open(&url).await.expect("reopen");
    assert_eq!(again.envoys().await.expect("envoys"), vec![common::envoy("web-1")]);
    assert_eq!(again.vigosync_seen().await.expect("seen"), seen);
    again.close().await;
    fixture.finish().await;
}

#[test]
fn with_database_replaces_only_the_name() {
    let cases = [
        ("postgres://vigo@localhost/postgres", "postgres://vigo@localhost/x"),
        ("postgres://vigo@localhost", "postgres://vigo@localhost/x"),
        ("postgres://vigo:pw@db:5433/postgres?sslmode=disable", "postgres://vigo:pw@db:5433/x?sslmode=disable"),
    ];
    for (url, want) in cases {
        assert_eq!(with_database(url, "x"), want);
    }
}
