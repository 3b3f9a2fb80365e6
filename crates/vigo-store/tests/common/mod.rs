//! Behaviour every backend must share: each scenario gets a freshly migrated, empty store.
//! `tests/sqlite.rs` and `tests/postgres.rs` run the same list through `every_scenario!`.

use vigo_store::{BundleRow, EnvoyRow, NewReport, Repeats, SeenRow, Store, StoreError, TokenRow, VersionRow, WriteOp};

/// Declares one test per scenario; `$fresh` is an async fn returning `Option<Fixture>`
/// (`None` skips, e.g. when no PostgreSQL server is configured).
#[macro_export]
macro_rules! scenarios {
    ($fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(fixture) = $fresh().await else { return };
                common::$name(fixture.store.clone()).await;
                fixture.finish().await;
            }
        )*
    };
}

/// Every backend-independent scenario, each as a test against `$fresh`'s backend:
/// one list, so a new scenario runs on SQLite and PostgreSQL alike.
#[macro_export]
macro_rules! every_scenario {
    ($fresh:path) => {
        scenarios!($fresh;
            empty_store_reads_empty,
            tokens_round_trip,
            token_is_single_use,
            token_refusals,
            revoke_token_blocks_use,
            token_race_has_one_winner,
            admin_tokens_round_trip,
            envoys_round_trip,
            enrollment_rules,
            check_in_updates,
            batch_is_atomic,
            batch_equals_one_at_a_time,
            versions_and_bundles,
            reports_are_stored_once,
            old_reports_are_pruned_but_not_the_last,
            repeated_outcomes_count_on_their_row,
            the_stored_mark_moves_only_without_a_gap,
            vigosync_seen_moves_forward,
        );
    };
}

pub const NOW: i64 = 1_800_000_000;

pub fn token(id: &str) -> TokenRow {
    TokenRow {
        id: id.to_owned(),
        hash: format!("$2b$12$hash-of-{id}"),
        hosts: "web-*".to_owned(),
        created_at: NOW - 100,
        expires_at: Some(NOW + 3600),
        used_at: None,
        used_by: None,
        revoked: false,
    }
}

pub fn envoy(name: &str) -> EnvoyRow {
    EnvoyRow {
        age_recipient: Some(format!("age1{name}")),
        ..EnvoyRow::enrolled(name, vec![0, 1, 2, 0xfe, 0xff, 0], &format!("sha256:{name}"), NOW)
    }
}

/// What one check-in writes: the envoy's row and, when it carried one, its report.
pub fn check_in(envoy: &str, at: i64, traits: Option<&str>, report: Option<(i64, &str)>) -> Vec<WriteOp> {
    let row = WriteOp::CheckIn {
        envoy: envoy.to_owned(),
        at,
        traits_json: traits.map(str::to_owned),
        policy_version: format!("v-{at}"),
    };
    let report = report.map(|(seq, json)| WriteOp::new_reports(envoy, at, vec![(seq, json.to_owned())]));
    std::iter::once(row).chain(report).collect()
}

pub fn version(number: i64) -> VersionRow {
    VersionRow { number, message: format!("publish {number}"), created_at: NOW + number, active: true }
}

pub fn bundle(number: i64, set_key: &str) -> BundleRow {
    BundleRow {
        number,
        set_key: set_key.to_owned(),
        version: format!("{number}-0123456789ab"),
        // Every byte value, including NUL and invalid UTF-8, must come back unchanged.
        payload: (0..=255u8).chain([0, 0xff, 0xc3]).collect(),
        signature: vec![0xff; 64],
    }
}

pub async fn envoy_named(store: &Store, name: &str) -> Option<EnvoyRow> {
    let envoys = store.envoys().await.expect("list envoys");
    envoys.into_iter().find(|e| e.name == name)
}

pub async fn token_named(store: &Store, id: &str) -> Option<TokenRow> {
    let tokens = store.tokens().await.expect("list tokens");
    tokens.into_iter().find(|t| t.id == id)
}

// ---- scenarios ----

pub async fn empty_store_reads_empty(store: Store) {
    assert_eq!(store.tokens().await.expect("tokens"), vec![]);
    assert_eq!(store.admin_tokens().await.expect("admin tokens"), vec![]);
    assert_eq!(store.envoys().await.expect("envoys"), vec![]);
    assert_eq!(store.versions().await.expect("versions"), vec![]);
    assert_eq!(store.active_version().await.expect("active"), None);
    assert_eq!(store.bundles(1).await.expect("bundles"), vec![]);
    store.apply_batch(&[]).await.expect("empty batch");
}

pub async fn tokens_round_trip(store: Store) {
    let mut never_expires = token("t2");
    never_expires.expires_at = None;
    never_expires.created_at = NOW;
    let mut used = token("t3");
    used.created_at = NOW + 1;
    used.used_at = Some(NOW);
    used.used_by = Some("web-1".to_owned());
    used.revoked = true;
    for t in [&used, &token("t1"), &never_expires] {
        store.insert_token(t).await.expect("insert token");
    }
    assert_eq!(store.tokens().await.expect("tokens"), vec![token("t1"), never_expires, used], "oldest first");

    let err = store.insert_token(&token("t1")).await.expect_err("duplicate id");
    assert!(matches!(&err, StoreError::Conflict { table: "enrollment_tokens", key } if key == "t1"), "{err:?}");
}

pub async fn token_is_single_use(store: Store) {
    store.insert_token(&token("t1")).await.expect("insert");
    assert!(store.use_token("t1", "web-1", NOW).await.expect("first use"));
    assert!(!store.use_token("t1", "web-2", NOW + 1).await.expect("second use"));
    let t = token_named(&store, "t1").await.expect("token t1");
    assert_eq!((t.used_at, t.used_by.as_deref()), (Some(NOW), Some("web-1")));
    assert!(!store.use_token("nope", "web-1", NOW).await.expect("unknown token"));
}

pub async fn token_refusals(store: Store) {
    // (expires_at, revoked, usable at NOW)
    let cases = [
        (None, false, true),
        (Some(NOW + 1), false, true),
        (Some(NOW), false, false),
        (Some(NOW - 1), false, false),
        (None, true, false),
        (Some(NOW + 1), true, false),
    ];
    for (i, (expires_at, revoked, usable)) in cases.into_iter().enumerate() {
        let id = format!("case-{i}");
        let mut t = token(&id);
        t.expires_at = expires_at;
        t.revoked = revoked;
        store.insert_token(&t).await.expect("insert");
        let won = store.use_token(&id, "web-1", NOW).await.expect("use");
        assert_eq!(won, usable, "expires_at {expires_at:?}, revoked {revoked}");
        let stored = token_named(&store, &id).await.expect("token");
        assert_eq!(stored.used_at.is_some(), usable, "refusal must not mark {id} used");
    }
}

pub async fn revoke_token_blocks_use(store: Store) {
    store.insert_token(&token("t1")).await.expect("insert");
    assert!(store.revoke_token("t1").await.expect("revoke"));
    assert!(store.revoke_token("t1").await.expect("revoke again"), "revoking twice still finds it");
    assert!(!store.revoke_token("nope").await.expect("revoke unknown"));
    assert!(token_named(&store, "t1").await.expect("t1").revoked);
    assert!(!store.use_token("t1", "web-1", NOW).await.expect("use revoked"));
}

pub async fn token_race_has_one_winner(store: Store) {
    store.insert_token(&token("race")).await.expect("insert");
    let racers: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let envoy = format!("web-{i}");
                let won = store.use_token("race", &envoy, NOW).await.expect("use token");
                (envoy, won)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        let (envoy, won) = racer.await.expect("racer task");
        if won {
            winners.push(envoy);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let t = token_named(&store, "race").await.expect("token");
    assert_eq!(t.used_by, winners.pop());
}

pub async fn admin_tokens_round_trip(store: Store) {
    let hex = "ab".repeat(32);
    store.insert_admin_token("admin-2", &hex, NOW + 1).await.expect("insert");
    store.insert_admin_token("admin-1", &"cd".repeat(32), NOW).await.expect("insert");
    let ids: Vec<_> =
        store.admin_tokens().await.expect("list").into_iter().map(|t| (t.id, t.sha256, t.created_at)).collect();
    assert_eq!(ids, vec![("admin-1".to_owned(), "cd".repeat(32), NOW), ("admin-2".to_owned(), hex.clone(), NOW + 1)]);
    let err = store.insert_admin_token("admin-1", &"ef".repeat(32), NOW).await.expect_err("dup id");
    assert!(matches!(err, StoreError::Conflict { table: "admin_tokens", .. }), "{err:?}");
    let err = store.insert_admin_token("admin-3", &hex, NOW).await.expect_err("dup hash");
    assert!(matches!(err, StoreError::Conflict { table: "admin_tokens", .. }), "{err:?}");
}

pub async fn envoys_round_trip(store: Store) {
    let mut full = envoy("db-1");
    full.revoked_at = Some(NOW + 5);
    full.last_checkin = Some(NOW + 1);
    full.traits_json = Some(r#"{"os_family":"debian"}"#.to_owned());
    full.policy_version = Some("3-0123456789ab".to_owned());
    full.last_report_json = Some(r#"{"changed":2}"#.to_owned());
    full.report_seq = 7;
    // Envoys enrolled before secrets existed have no age recipient.
    full.age_recipient = None;
    store.insert_envoy(&envoy("web-1")).await.expect("insert web-1");
    store.insert_envoy(&full).await.expect("insert db-1");
    assert_eq!(store.envoys().await.expect("list"), vec![full, envoy("web-1")], "by name");
}

pub async fn enrollment_rules(store: Store) {
    store.insert_envoy(&envoy("web-1")).await.expect("enroll");

    let mut again = envoy("web-1");
    again.signing_key = vec![9; 32];
    again.age_recipient = Some("age1new".to_owned());
    let err = store.insert_envoy(&again).await.expect_err("active name");
    assert!(matches!(&err, StoreError::Conflict { table: "envoys", key } if key == "web-1"), "{err:?}");
    assert_eq!(envoy_named(&store, "web-1").await, Some(envoy("web-1")), "active row untouched");

    store.apply_batch(&check_in("web-1", NOW + 10, Some("{}"), Some((4, "{}")))).await.expect("check in");
    assert!(store.revoke_envoy("web-1", NOW + 20).await.expect("revoke"));
    assert!(store.revoke_envoy("web-1", NOW + 30).await.expect("revoke again"));
    assert_eq!(
        envoy_named(&store, "web-1").await.expect("web-1").revoked_at,
        Some(NOW + 20),
        "revoking twice keeps the first time"
    );
    assert!(!store.revoke_envoy("nope", NOW).await.expect("revoke unknown"));

    // Re-enrolling a revoked name replaces the whole row, history included.
    again.enrolled_at = NOW + 40;
    store.insert_envoy(&again).await.expect("re-enroll revoked name");
    assert_eq!(envoy_named(&store, "web-1").await, Some(again.clone()));
    let err = store.insert_envoy(&envoy("web-1")).await.expect_err("active again");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(store.envoys().await.expect("list").len(), 1);
}

pub async fn check_in_updates(store: Store) {
    for name in ["web-1", "web-2"] {
        store.insert_envoy(&envoy(name)).await.expect("enroll");
    }
    let traits = r#"{"os_family":"debian"}"#;
    store
        .apply_batch(
            &[
                check_in("web-1", NOW + 1, Some(traits), Some((1, r#"{"run":1}"#))),
                check_in("web-2", NOW + 2, None, None),
                check_in("ghost", NOW + 3, None, None),
            ]
            .concat(),
        )
        .await
        .expect("batch");
    let web1 = envoy_named(&store, "web-1").await.expect("web-1");
    assert_eq!(web1.last_checkin, Some(NOW + 1));
    assert_eq!(web1.policy_version.as_deref(), Some("v-1800000001"));
    assert_eq!(web1.traits_json.as_deref(), Some(traits));
    assert_eq!((web1.report_seq, web1.last_report_json.as_deref()), (1, Some(r#"{"run":1}"#)));
    let web2 = envoy_named(&store, "web-2").await.expect("web-2");
    assert_eq!((web2.last_checkin, web2.traits_json, web2.report_seq), (Some(NOW + 2), None, 0));
    assert_eq!(envoy_named(&store, "ghost").await, None, "unknown names are not created");

    // (traits sent, report sent, expected traits, expected (seq, report))
    let cases = [
        (None, None, Some(traits), (1, r#"{"run":1}"#)),
        (
            Some(r#"{"os_family":"redhat"}"#),
            Some((3, r#"{"run":3}"#)),
            Some(r#"{"os_family":"redhat"}"#),
            (3, r#"{"run":3}"#),
        ),
        (None, Some((3, r#"{"run":"dup"}"#)), Some(r#"{"os_family":"redhat"}"#), (3, r#"{"run":3}"#)),
        (None, Some((2, r#"{"run":2}"#)), Some(r#"{"os_family":"redhat"}"#), (3, r#"{"run":3}"#)),
        (None, Some((4, r#"{"run":4}"#)), Some(r#"{"os_family":"redhat"}"#), (4, r#"{"run":4}"#)),
    ];
    for (i, (sent_traits, sent_report, want_traits, want_report)) in cases.into_iter().enumerate() {
        let at = NOW + 10 + i as i64;
        store.apply_batch(&check_in("web-1", at, sent_traits, sent_report)).await.expect("check in");
        let web1 = envoy_named(&store, "web-1").await.expect("web-1");
        assert_eq!(web1.last_checkin, Some(at), "case {i}");
        assert_eq!(web1.traits_json.as_deref(), want_traits, "case {i}");
        assert_eq!(
            (web1.report_seq, web1.last_report_json.as_deref()),
            (want_report.0, Some(want_report.1)),
            "case {i}"
        );
    }

    // Later ops in one batch see earlier ones: a batch holding a stale report after a new
    // one keeps the new one.
    store
        .apply_batch(
            &[
                check_in("web-2", NOW + 50, None, Some((9, r#"{"run":9}"#))),
                check_in("web-2", NOW + 51, None, Some((8, r#"{"run":8}"#))),
            ]
            .concat(),
        )
        .await
        .expect("batch");
    let web2 = envoy_named(&store, "web-2").await.expect("web-2");
    assert_eq!((web2.last_checkin, web2.report_seq), (Some(NOW + 51), 9));
}

/// One batch holding several check-ins of the same envoy leaves the row exactly as
/// applying them one at a time does; a batch larger than one statement's share of
/// envoys updates every one of them.
pub async fn batch_equals_one_at_a_time(store: Store) {
    let t1 = r#"{"os_family":"debian"}"#;
    let t2 = r#"{"os_family":"redhat"}"#;
    type Op<'a> = (Option<&'a str>, Option<(i64, &'a str)>);
    // Each case: the check-ins of one envoy, in order.
    let cases: Vec<(&str, Vec<Op<'_>>)> = vec![
        ("nothing sent", vec![(None, None), (None, None)]),
        ("traits then none", vec![(Some(t1), None), (None, None)]),
        ("traits twice", vec![(Some(t1), None), (Some(t2), None), (None, None)]),
        ("reports rising", vec![(None, Some((1, r#"{"r":1}"#))), (None, Some((2, r#"{"r":2}"#)))]),
        ("stale after new", vec![(None, Some((5, r#"{"r":5}"#))), (None, Some((4, r#"{"r":4}"#)))]),
        ("equal numbers", vec![(None, Some((3, r#"{"r":"a"}"#))), (None, Some((3, r#"{"r":"b"}"#)))]),
        ("report then none", vec![(Some(t2), Some((7, r#"{"r":7}"#))), (None, None), (Some(t1), None)]),
        ("below stored", vec![(None, Some((1, r#"{"r":"old"}"#)))]),
    ];
    for (i, (name, ops)) in cases.iter().enumerate() {
        let (batched, single) = (format!("b-{i}"), format!("s-{i}"));
        for envoy_name in [&batched, &single] {
            store.insert_envoy(&envoy(envoy_name)).await.expect("enroll");
            // A stored report first, so lower numbers have something to lose to.
            store.apply_batch(&check_in(envoy_name, NOW, None, Some((2, r#"{"r":"stored"}"#)))).await.expect("seed");
        }
        let at = |k: usize| NOW + 10 + k as i64;
        let batch: Vec<WriteOp> =
            ops.iter().enumerate().flat_map(|(k, (t, r))| check_in(&batched, at(k), *t, *r)).collect();
        store.apply_batch(&batch).await.expect("batch");
        for (k, (t, r)) in ops.iter().enumerate() {
            store.apply_batch(&check_in(&single, at(k), *t, *r)).await.expect("single");
        }
        // The columns a check-in writes (the rest differ by name only).
        let written = |e: EnvoyRow| (e.last_checkin, e.policy_version, e.traits_json, e.report_seq, e.last_report_json);
        let got = written(envoy_named(&store, &batched).await.expect("batched row"));
        let want = written(envoy_named(&store, &single).await.expect("single row"));
        assert_eq!(got, want, "case {name}");
    }

    let many: Vec<String> = (0..450).map(|i| format!("fleet-{i:03}")).collect();
    for name in &many {
        store.insert_envoy(&envoy(name)).await.expect("enroll");
    }
    let batch: Vec<WriteOp> =
        many.iter().enumerate().flat_map(|(i, n)| check_in(n, NOW + i as i64, None, Some((1, r#"{"r":1}"#)))).collect();
    store.apply_batch(&batch).await.expect("large batch");
    for (i, name) in many.iter().enumerate() {
        let row = envoy_named(&store, name).await.expect("row");
        assert_eq!((row.last_checkin, row.report_seq), (Some(NOW + i as i64), 1), "{name}");
    }
}

pub async fn batch_is_atomic(store: Store) {
    for name in ["web-1", "web-2"] {
        store.insert_envoy(&envoy(name)).await.expect("enroll");
    }
    let err = store
        .apply_batch(
            &[
                check_in("web-1", NOW + 1, Some("{}"), Some((1, "{}"))),
                check_in("web-2", NOW + 1, Some("not json"), None),
            ]
            .concat(),
        )
        .await
        .expect_err("invalid traits JSON");
    let message = err.to_string();
    assert!(message.contains("envoys") && message.contains("web-2"), "{message}");
    assert_eq!(envoy_named(&store, "web-1").await, Some(envoy("web-1")), "first op rolled back");
    assert_eq!(envoy_named(&store, "web-2").await, Some(envoy("web-2")));
    let err = store
        .apply_batch(
            &[
                check_in("web-1", NOW + 1, None, Some((1, "{}"))),
                check_in("web-2", NOW + 1, None, Some((1, "{\"cut\":"))),
            ]
            .concat(),
        )
        .await
        .expect_err("invalid report JSON");
    let message = err.to_string();
    assert!(message.contains("web-2/1") && message.contains("report_json"), "{message}");
    assert_eq!(envoy_named(&store, "web-1").await, Some(envoy("web-1")), "nothing written");

    // The store stays usable after a failed batch.
    store.apply_batch(&check_in("web-1", NOW + 2, None, None)).await.expect("batch after failure");
    assert_eq!(envoy_named(&store, "web-1").await.expect("web-1").last_checkin, Some(NOW + 2));
}

pub async fn versions_and_bundles(store: Store) {
    let first = [bundle(1, "base"), bundle(1, "a-web")];
    store.insert_version(&version(1), &first).await.expect("publish 1");
    let mut second = version(2);
    second.active = false; // ignored: a new publish is always the active one
    store.insert_version(&second, &[bundle(2, "base")]).await.expect("publish 2");

    let mut v1 = version(1);
    v1.active = false;
    assert_eq!(store.versions().await.expect("versions"), vec![version(2), v1.clone()]);
    assert_eq!(store.active_version().await.expect("active"), Some(version(2)));
    assert_eq!(
        store.bundles(1).await.expect("bundles 1"),
        vec![bundle(1, "a-web"), bundle(1, "base")],
        "by set key, bytes unchanged"
    );
    assert_eq!(store.bundles(2).await.expect("bundles 2"), vec![bundle(2, "base")]);
    assert_eq!(store.bundles(3).await.expect("bundles 3"), vec![]);

    // A failing publish changes nothing: neither the active flag nor any bundle.
    let err =
        store.insert_version(&version(3), &[bundle(3, "x"), bundle(3, "x")]).await.expect_err("duplicate set key");
    assert!(matches!(&err, StoreError::Conflict { table: "bundles", key } if key == "3/x"), "{err:?}");
    let err = store.insert_version(&version(2), &[]).await.expect_err("duplicate number");
    assert!(matches!(&err, StoreError::Conflict { table: "versions", key } if key == "2"), "{err:?}");
    assert_eq!(store.active_version().await.expect("active"), Some(version(2)));
    assert_eq!(store.versions().await.expect("versions").len(), 2);
    assert_eq!(store.bundles(3).await.expect("bundles 3"), vec![]);

    let err = store.insert_version(&version(4), &[bundle(5, "base")]).await.expect_err("bundle of another version");
    assert!(matches!(err, StoreError::BundleMismatch { version: 4, bundle: 5, .. }), "{err:?}");
    assert_eq!(store.versions().await.expect("versions").len(), 2);
}

fn reports(envoy: &str, at: i64, seqs: &[i64]) -> WriteOp {
    WriteOp::new_reports(envoy, at, seqs.iter().map(|s| (*s, format!(r#"{{"run":{s},"at":{at}}}"#))).collect())
}

pub async fn reports_are_stored_once(store: Store) {
    for name in ["web-1", "web-2"] {
        store.insert_envoy(&envoy(name)).await.expect("enroll");
    }
    store.apply_batch(&[reports("web-1", NOW, &[1, 2, 3]), reports("web-2", NOW, &[1])]).await.expect("first");
    // Resending an overlapping window stores only what is new; the first copy wins.
    store.apply_batch(&[reports("web-1", NOW + 5, &[2, 3, 4])]).await.expect("resend");
    let web1 = store.reports("web-1").await.expect("list");
    let seqs: Vec<(i64, i64)> = web1.iter().map(|r| (r.seq, r.received_at)).collect();
    assert_eq!(seqs, [(1, NOW), (2, NOW), (3, NOW), (4, NOW + 5)]);
    assert_eq!(web1[1].report_json, format!(r#"{{"run":2,"at":{NOW}}}"#));
    assert_eq!(store.reports("web-2").await.expect("list").len(), 1);
    assert!(store.reports("nope").await.expect("list").is_empty());

    // One batch may carry the same report twice (two check-ins of one envoy written
    // together): the first copy is stored. A large batch spans several statements.
    let many: Vec<i64> = (10..=610).collect();
    store
        .apply_batch(&[
            reports("web-2", NOW + 1, &[2]),
            reports("web-2", NOW + 2, &[2, 3]),
            reports("web-2", NOW + 3, &many),
        ])
        .await
        .expect("duplicates and many");
    let web2 = store.reports("web-2").await.expect("list");
    let seqs: Vec<(i64, i64)> = web2.iter().take(3).map(|r| (r.seq, r.received_at)).collect();
    assert_eq!(seqs, [(1, NOW), (2, NOW + 1), (3, NOW + 2)]);
    assert_eq!(web2.len(), 3 + many.len());
    assert_eq!(web2.last().map(|r| r.seq), Some(610));

    // A report that is not JSON fails the whole batch.
    let bad = WriteOp::new_reports("web-1", NOW, vec![(9, "{}".into()), (10, "not json".into())]);
    store.apply_batch(&[bad]).await.expect_err("not json");
    assert_eq!(store.reports("web-1").await.expect("list").len(), 4, "nothing of a failed batch stays");

    // A revoked envoy enrolled again starts without history.
    assert!(store.revoke_envoy("web-1", NOW + 10).await.expect("revoke"));
    store.insert_envoy(&envoy("web-1")).await.expect("re-enroll");
    assert!(store.reports("web-1").await.expect("list").is_empty());
    assert_eq!(store.reports("web-2").await.expect("list").len(), web2.len(), "other envoys keep theirs");
}

fn repeats(count: i64, last_seq: i64, last_at: i64) -> Option<Repeats> {
    Some(Repeats { count, last_seq, last_at })
}

/// What `reports` lists for an envoy: `(seq, repeats)` by row.
async fn repeats_of(store: &Store, name: &str) -> Vec<(i64, Option<Repeats>)> {
    store.reports(name).await.expect("list").into_iter().map(|r| (r.seq, r.repeats)).collect()
}

pub async fn repeated_outcomes_count_on_their_row(store: Store) {
    for name in ["web-1", "web-2", "web-3"] {
        store.insert_envoy(&envoy(name)).await.expect("enroll");
    }
    let json = |seq: i64| format!(r#"{{"run":{seq}}}"#);
    let ops = |envoy: &str, at, reports: Vec<NewReport>, closes, open| WriteOp::Reports {
        envoy: envoy.to_owned(),
        at,
        reports,
        closes,
        open,
        through: (0, 0),
    };
    let new = |seq: i64, repeats: Option<Repeats>| NewReport { seq, json: json(seq), repeats };

    // Runs 2 and 3 repeat run 1: its row counts them, kept on the envoy's row while open.
    store.apply_batch(&[WriteOp::new_reports("web-1", NOW, vec![(1, json(1))])]).await.expect("first");
    store.apply_batch(&[ops("web-1", NOW + 1, vec![], None, (1, repeats(2, 3, NOW + 1)))]).await.expect("repeats");
    assert_eq!(repeats_of(&store, "web-1").await, [(1, repeats(2, 3, NOW + 1))]);
    let row = |name: &'static str| {
        let store = store.clone();
        async move { store.envoys().await.expect("envoys").into_iter().find(|e| e.name == name).expect("row") }
    };
    let web1 = row("web-1").await;
    assert_eq!((web1.report_seq, web1.repeats), (1, repeats(2, 3, NOW + 1)));

    // The repeats of a row that is not the envoy's newest stored one are not written.
    store.apply_batch(&[ops("web-2", NOW, vec![], None, (5, repeats(1, 6, NOW)))]).await.expect("no row");
    assert_eq!(row("web-2").await.repeats, None);

    // A new outcome closes the open row; runs repeating it within one delivery go
    // with it; the newest row's repeats are open again.
    let closing = ops(
        "web-1",
        NOW + 2,
        vec![new(4, repeats(1, 5, NOW + 2)), new(6, None)],
        Some((1, Repeats { count: 2, last_seq: 3, last_at: NOW + 1 })),
        (6, repeats(1, 7, NOW + 2)),
    );
    store.apply_batch(&[closing]).await.expect("closing");
    let expected = [(1, repeats(2, 3, NOW + 1)), (4, repeats(1, 5, NOW + 2)), (6, repeats(1, 7, NOW + 2))];
    assert_eq!(repeats_of(&store, "web-1").await, expected);
    let web1 = row("web-1").await;
    assert_eq!((web1.report_seq, web1.repeats), (6, repeats(1, 7, NOW + 2)));
    // The newest rows only, still with the open count on the newest.
    let recent = store.recent_reports("web-1", 2).await.expect("recent");
    assert_eq!(recent.iter().map(|r| (r.seq, r.repeats)).collect::<Vec<_>>(), expected[1..]);
    assert!(store.recent_reports("web-1", 0).await.expect("none").is_empty());

    // In one batch: a row stored, repeated and closed; and an envoy's streak written
    // twice, out of order, keeps the one furthest along.
    store
        .apply_batch(&[
            WriteOp::new_reports("web-2", NOW, vec![(1, json(1))]),
            ops("web-2", NOW, vec![], None, (1, repeats(1, 2, NOW))),
            ops(
                "web-2",
                NOW,
                vec![new(3, None)],
                Some((1, Repeats { count: 1, last_seq: 2, last_at: NOW })),
                (3, None),
            ),
            ops("web-1", NOW + 3, vec![], None, (6, repeats(3, 9, NOW + 3))),
            ops("web-1", NOW + 3, vec![], None, (6, repeats(2, 8, NOW + 3))),
        ])
        .await
        .expect("one batch");
    assert_eq!(repeats_of(&store, "web-2").await, [(1, repeats(1, 2, NOW)), (3, None)]);
    assert_eq!(row("web-2").await.repeats, None);
    assert_eq!(row("web-1").await.repeats, repeats(3, 9, NOW + 3));

    // Pruning goes by the last time a row's outcome was reported.
    assert_eq!(store.prune_reports(NOW + 1, 100).await.expect("prune"), 1, "web-2's row 1, last repeated at NOW");
    assert_eq!(repeats_of(&store, "web-2").await, [(3, None)]);
    assert_eq!(repeats_of(&store, "web-1").await[0].0, 1, "received at NOW, but repeated at NOW + 1");
    assert_eq!(store.prune_reports(NOW + 2, 100).await.expect("prune"), 1);
    assert_eq!(repeats_of(&store, "web-1").await[0].0, 4);

    // An envoy enrolled again starts without repeats.
    assert!(store.revoke_envoy("web-1", NOW + 10).await.expect("revoke"));
    store.insert_envoy(&envoy("web-1")).await.expect("re-enroll");
    assert_eq!(row("web-1").await.repeats, None);
    assert!(repeats_of(&store, "web-1").await.is_empty());
}

/// A delivery of the reports after `base` up to `highest`, all dropped as unusable.
fn through(envoy: &str, base: i64, highest: i64) -> WriteOp {
    WriteOp::Reports {
        envoy: envoy.to_owned(),
        at: NOW,
        reports: vec![],
        closes: None,
        open: (0, None),
        through: (base, highest),
    }
}

pub async fn the_stored_mark_moves_only_without_a_gap(store: Store) {
    for name in ["web-1", "web-2"] {
        store.insert_envoy(&envoy(name)).await.expect("enroll");
    }
    let marks = || async {
        let rows = store.envoys().await.expect("envoys");
        rows.into_iter().map(|e| (e.name, e.reports_stored)).collect::<Vec<_>>()
    };
    let mark = |web1: i64, web2: i64| vec![("web-1".to_owned(), web1), ("web-2".to_owned(), web2)];
    store
        .apply_batch(&[WriteOp::new_reports("web-1", NOW, vec![(1, "{}".into()), (2, "{}".into())])])
        .await
        .expect("1-2");
    assert_eq!(marks().await, mark(2, 0));
    // A delivery after a missing one (3 was never stored) leaves the mark.
    store.apply_batch(&[WriteOp::new_reports("web-1", NOW, vec![(4, "{}".into())])]).await.expect("4");
    assert_eq!(marks().await, mark(2, 0));
    assert_eq!(store.reports("web-1").await.expect("list").len(), 3, "report 4 is stored all the same");
    // The resend fills the gap; an older delivery written late does not move it back.
    store.apply_batch(&[through("web-1", 2, 4), through("web-1", 1, 2)]).await.expect("resend");
    assert_eq!(marks().await, mark(4, 0));
    // Several deliveries of one envoy in a batch apply in order: the second needs the
    // first; a later one that needs the third (out of order) does not apply.
    store
        .apply_batch(&[through("web-2", 0, 1), through("web-1", 4, 5), through("web-2", 2, 3), through("web-2", 1, 2)])
        .await
        .expect("in order");
    assert_eq!(marks().await, mark(5, 2));

    // It survives re-enrollment only as what the new row says.
    assert!(store.revoke_envoy("web-1", NOW + 10).await.expect("revoke"));
    store.insert_envoy(&envoy("web-1")).await.expect("re-enroll");
    assert_eq!(marks().await, mark(0, 2));
}

pub async fn old_reports_are_pruned_but_not_the_last(store: Store) {
    for name in ["web-1", "web-2", "web-3"] {
        store.insert_envoy(&envoy(name)).await.expect("enroll");
    }
    // web-1: five reports a minute apart; web-2: one old report; web-3: one recent report.
    let mut ops: Vec<WriteOp> = (1..=5).map(|s| reports("web-1", NOW + 60 * s, &[s])).collect();
    ops.push(reports("web-2", NOW, &[1]));
    ops.push(reports("web-3", NOW + 600, &[1]));
    store.apply_batch(&ops).await.expect("reports");
    let seqs = |name: &'static str| {
        let store = store.clone();
        async move { store.reports(name).await.expect("list").iter().map(|r| r.seq).collect::<Vec<_>>() }
    };

    // Older than the cut-off goes, at most `limit` at a time, oldest first; each envoy's
    // newest stays.
    assert_eq!(store.prune_reports(NOW + 200, 2).await.expect("prune"), 2);
    assert_eq!(seqs("web-1").await, [3, 4, 5]);
    assert_eq!(store.prune_reports(NOW + 200, 2).await.expect("prune"), 1);
    assert_eq!(seqs("web-1").await, [4, 5]);
    assert_eq!(store.prune_reports(NOW + 200, 2).await.expect("prune"), 0, "nothing older is left");
    assert_eq!(seqs("web-2").await, [1], "the last report stays, however old");
    // Everything but the newest, when the cut-off is past them all.
    assert_eq!(store.prune_reports(NOW + 10_000, 100).await.expect("prune"), 1);
    assert_eq!((seqs("web-1").await, seqs("web-2").await, seqs("web-3").await), (vec![5], vec![1], vec![1]));
    let last: Vec<(String, i64)> =
        store.envoys().await.expect("envoys").into_iter().map(|e| (e.name, e.report_seq)).collect();
    assert_eq!(last, [("web-1".to_owned(), 5), ("web-2".to_owned(), 1), ("web-3".to_owned(), 1)]);
}

pub fn seen(envoy: &str, user: &str, name: &str, mtime: i64, sha256: &str) -> SeenRow {
    SeenRow { envoy: envoy.to_owned(), user: user.to_owned(), name: name.to_owned(), mtime, sha256: sha256.repeat(32) }
}

pub async fn vigosync_seen_moves_forward(store: Store) {
    for name in ["web-1", "web-2"] {
        store.insert_envoy(&envoy(name)).await.expect("enroll");
    }
    let first = [seen("web-1", "alice", "notes.txt", 10, "aa"), seen("web-2", "alice", "notes.txt", 10, "aa")];
    store.apply_batch(&[WriteOp::VigosyncSeen(first.to_vec())]).await.expect("first");
    // Case by case on web-1: only a newer version (mtime, then hash) replaces the stored one.
    for (row, stored) in [
        (seen("web-1", "alice", "notes.txt", 9, "ff"), (10, "aa")),
        (seen("web-1", "alice", "notes.txt", 10, "00"), (10, "aa")),
        (seen("web-1", "alice", "notes.txt", 10, "bb"), (10, "bb")),
        (seen("web-1", "alice", "notes.txt", 11, "00"), (11, "00")),
        (seen("web-1", "alice", "notes.txt", 5, "ff"), (11, "00")),
    ] {
        store.apply_batch(&[WriteOp::VigosyncSeen(vec![row.clone()])]).await.expect("upsert");
        let all = store.vigosync_seen().await.expect("list");
        let web1 = all.iter().find(|r| r.envoy == "web-1").expect("web-1 row");
        assert_eq!((web1.mtime, web1.sha256.as_str()), (stored.0, stored.1.repeat(32).as_str()), "after {row:?}");
    }
    // A row for an unknown envoy is a no-op, not a failed batch.
    let unknown = WriteOp::VigosyncSeen(vec![seen("nope", "alice", "x", 1, "aa"), seen("web-2", "bob", "y", 2, "cc")]);
    store.apply_batch(&[unknown]).await.expect("unknown envoy");
    let all = store.vigosync_seen().await.expect("list");
    let keys: Vec<(&str, &str, &str)> =
        all.iter().map(|r| (r.envoy.as_str(), r.user.as_str(), r.name.as_str())).collect();
    assert_eq!(keys, [("web-1", "alice", "notes.txt"), ("web-2", "alice", "notes.txt"), ("web-2", "bob", "y")]);

    // A revoked envoy enrolled again has seen nothing.
    assert!(store.revoke_envoy("web-1", NOW + 10).await.expect("revoke"));
    store.insert_envoy(&envoy("web-1")).await.expect("re-enroll");
    let all = store.vigosync_seen().await.expect("list");
    assert!(all.iter().all(|r| r.envoy == "web-2"), "{all:?}");
    assert_eq!(all.len(), 2, "other envoys keep theirs");
}
