//! The REST API against a real server in a temporary state directory, without TLS.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::server::Server;
use crate::settings::Settings;
use crate::state_dir::{self, StateDir};

const GOOD_MODULE: &str = "\
name: base
resources:
  - name: Message of the day
    type: file
    target_path: /tmp/vigo-rest-test/motd
    content: \"managed\\n\"
";

/// Line 4 names a type that does not exist.
const BAD_MODULE: &str = "\
name: broken
resources:
  - name: Mystery
    type: no_such_type
    path: /tmp/x
";

struct Fixture {
    dir: tempfile::TempDir,
    server: Server,
    router: Router,
    admin: String,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path().join("state"));
        let out = state_dir::init(&state, &[], None).await.expect("init state dir");
        let admin = out.admin_token.expect("the first init creates the admin token");
        let config = dir.path().join("config");
        std::fs::create_dir_all(config.join("modules")).expect("modules dir");
        std::fs::write(config.join("modules/base.yaml"), GOOD_MODULE).expect("module");
        let store = vigo_store::Store::open(&state.sqlite_url()).await.expect("open store");
        let (server, _writer) = Server::open(state, config, Settings::default(), store).await.expect("open server");
        let router = super::router(server.clone());
        Self { dir, server, router, admin }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("config")
    }

    async fn send(&self, method: Method, uri: &str, token: Option<&str>, body: Option<String>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(body.map_or_else(Body::empty, Body::from)).expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("router is infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    async fn admin(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send(method, uri, Some(&self.admin.clone()), body.map(|b| b.to_string())).await
    }
}

#[tokio::test]
async fn rest_refuses_missing_and_wrong_tokens_with_json() {
    let f = Fixture::new().await;
    let cases: [(Option<&str>, &str); 3] =
        [(None, "missing"), (Some("vga_00000000_not-a-real-token"), "not valid"), (Some(""), "Bearer")];
    for (token, expect) in cases {
        for (method, uri) in
            [(Method::GET, "/api/v1/tokens"), (Method::POST, "/api/v1/publish"), (Method::GET, "/api/v1/status")]
        {
            let (status, body) = f.send(method.clone(), uri, token, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} with {token:?}");
            assert_eq!(body["code"], "unauthorized", "{body}");
            assert!(body["message"].as_str().is_some_and(|m| m.contains(expect)), "{token:?}: {body}");
        }
    }
    // A refused publish changed nothing.
    assert!(f.server.versions().await.expect("versions").is_empty());
}

#[tokio::test]
async fn rest_public_endpoints_need_no_token() {
    let f = Fixture::new().await;
    let (status, body) = f.send(Method::GET, "/api/v1/ca", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_str(), Some(f.server.ca.cert_pem()));
    let (status, body) = f.send(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", body["openapi"]);
}

#[tokio::test]
async fn rest_token_create_list_revoke() {
    let f = Fixture::new().await;
    let (status, created) =
        f.admin(Method::POST, "/api/v1/tokens", Some(json!({"hosts": "web-*", "ttl_secs": 3600}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let secret = created["token"].as_str().expect("token shown once");
    assert_eq!(created["hosts"], "web-*");
    assert!(created["expires_at"].as_i64().is_some_and(|t| t > crate::now()), "{created}");

    let (status, list) = f.admin(Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = list.as_array().expect("array");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["revoked"], false);
    let text = list.to_string();
    assert!(!text.contains(secret) && !text.contains("$2"), "no secret nor bcrypt hash in a listing: {text}");
    assert!(listed[0].get("hash").is_none());

    let (status, body) = f.admin(Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, list) = f.admin(Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(list[0]["revoked"], true);

    let (status, body) = f.admin(Method::DELETE, "/api/v1/tokens/nosuchid", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
}

#[tokio::test]
async fn rest_bad_request_bodies_are_400_json() {
    let f = Fixture::new().await;
    let cases = [
        ("{\"hosts\": \"\"}", "hosts"),
        ("{\"hosts\": \"web-[\"}", "glob"),
        ("{\"hosts\": \"a\", \"ttl\": 5}", "unknown field `ttl`"),
        ("{}", "missing field `hosts`"),
        ("not json", "invalid JSON"),
    ];
    for (body, expect) in cases {
        let (status, resp) = f.send(Method::POST, "/api/v1/tokens", Some(&f.admin), Some(body.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {resp}");
        assert_eq!(resp["code"], "invalid_request");
        assert!(resp["message"].as_str().is_some_and(|m| m.contains(expect)), "{body}: {resp}");
    }
}

#[tokio::test]
async fn rest_refuses_bodies_over_one_mebibyte() {
    let f = Fixture::new().await;
    let big = json!({"message": "x".repeat(super::MAX_BODY)}).to_string();
    let (status, body) = f.send(Method::POST, "/api/v1/publish", Some(&f.admin), Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["code"], "payload_too_large");
    assert!(f.server.versions().await.expect("versions").is_empty());
}

#[tokio::test]
async fn rest_publish_versions_and_status() {
    let f = Fixture::new().await;
    let (_, status) = f.admin(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status["active_version"], Value::Null);
    assert_eq!(status["envoys"], 0);

    // An empty body is a publish without a message.
    let (code, first) = f.send(Method::POST, "/api/v1/publish", Some(&f.admin), None).await;
    assert_eq!(code, StatusCode::OK, "{first}");
    assert_eq!(first, json!({"version": 1, "modules": 1, "envoys": 0}));
    let (code, second) = f.admin(Method::POST, "/api/v1/publish", Some(json!({"message": "second"}))).await;
    assert_eq!(code, StatusCode::OK, "{second}");
    assert_eq!(second["version"], 2);

    let (code, versions) = f.admin(Method::GET, "/api/v1/versions", None).await;
    assert_eq!(code, StatusCode::OK);
    let v = versions.as_array().expect("array");
    assert_eq!(v.len(), 2);
    assert_eq!(
        (v[0]["version"].as_i64(), v[0]["message"].as_str(), v[0]["active"].as_bool()),
        (Some(2), Some("second"), Some(true))
    );
    assert_eq!((v[1]["version"].as_i64(), v[1]["active"].as_bool()), (Some(1), Some(false)));

    let (_, status) = f.admin(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status["active_version"], 2);
    assert_eq!(status["interval_secs"], 60);
}

#[tokio::test]
async fn rest_invalid_publish_is_422_with_every_problem() {
    let f = Fixture::new().await;
    std::fs::write(f.config().join("modules/broken.yaml"), BAD_MODULE).expect("bad module");
    let (code, body) = f.admin(Method::POST, "/api/v1/publish", Some(json!({"message": "nope"}))).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_config");
    let problems = body["problems"].as_array().expect("problems");
    assert!(!problems.is_empty());
    let mystery = problems
        .iter()
        .find(|p| p["message"].as_str().is_some_and(|m| m.contains("no_such_type")))
        .unwrap_or_else(|| panic!("a problem names the unknown type: {body}"));
    assert_eq!(mystery["file"], "modules/broken.yaml", "{mystery}");
    assert_eq!(mystery["line"], 4, "{mystery}");
    assert!(mystery["col"].as_u64().is_some_and(|c| c > 0), "{mystery}");
    assert!(f.server.versions().await.expect("versions").is_empty(), "nothing published");
}

#[tokio::test]
async fn rest_envoys_empty_list_and_404() {
    let f = Fixture::new().await;
    let (code, list) = f.admin(Method::GET, "/api/v1/envoys", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list, json!([]));
    for (method, uri) in [
        (Method::GET, "/api/v1/envoys/ghost"),
        (Method::GET, "/api/v1/envoys/ghost/reports"),
        (Method::POST, "/api/v1/envoys/ghost/revoke"),
    ] {
        let (code, body) = f.admin(method, uri, None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(body["code"], "not_found");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("ghost")), "{body}");
    }
    let (code, body) = f.admin(Method::GET, "/api/v1/nothing/here", None).await;
    assert_eq!((code, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

#[tokio::test]
async fn rest_openapi_lists_every_route() {
    let f = Fixture::new().await;
    let (_, doc) = f.send(Method::GET, "/api/v1/openapi.json", None, None).await;
    let expected = [
        ("/api/v1/ca", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens", "get"),
        ("/api/v1/tokens/{id}", "delete"),
        ("/api/v1/envoys", "get"),
        ("/api/v1/envoys/{name}", "get"),
        ("/api/v1/envoys/{name}/reports", "get"),
        ("/api/v1/envoys/{name}/revoke", "post"),
        ("/api/v1/publish", "post"),
        ("/api/v1/versions", "get"),
        ("/api/v1/status", "get"),
        ("/api/v1/audit", "get"),
        ("/api/v1/audit/verify", "get"),
        ("/api/v1/login", "post"),
        ("/api/v1/swarm/sync", "get"),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let documented: usize = paths.values().map(|p| p.as_object().map_or(0, |ops| ops.len())).sum();
    assert_eq!(documented, expected.len(), "document has exactly the expected operations: {:?}", paths.keys());
    for (path, method) in expected {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is missing from the OpenAPI document");
        // Each documented operation is really routed: without a token it is either
        // served (public) or refused as unauthorized, never an unknown route.
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let uri = path.replace("{id}", "x").replace("{name}", "x");
        let (code, _) = f.send(m, &uri, None, None).await;
        let public = op["security"].is_null();
        if public {
            assert_eq!(code, StatusCode::OK, "{method} {path}");
        } else {
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(op["security"][0], json!({"admin_token": []}), "{method} {path}");
        }
    }
    assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn rest_swarm_sync_shows_each_envoys_copy() {
    let f = Fixture::new().await;
    let (code, body) = f.admin(Method::GET, "/api/v1/swarm/sync", None).await;
    assert_eq!((code, body), (StatusCode::OK, json!({"users": [], "overflow": []})));

    let entry =
        |mtime: i64, sha: &str| json!({"name": "notes.txt", "sha256": sha.repeat(32), "size": 5, "mtime": mtime});
    let traits = |user: &str, files: Value| json!({"users": {"human": [user]}, "vigosync": {user: files}});
    let ip = |n: u8| Some(std::net::IpAddr::from([198, 18, 0, n]));
    let sync = &f.server.vigosync;
    sync.check_in("h1", Some(&traits("alice", json!([entry(20, "bb")]))), ip(1), 1, 100);
    sync.check_in("h2", Some(&traits("alice", json!([entry(10, "aa")]))), ip(2), 1, 100);
    sync.check_in("h3", Some(&traits("bob", json!([]))), ip(3), 1, 100);

    let (code, body) = f.admin(Method::GET, "/api/v1/swarm/sync?user=alice", None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let users = body["users"].as_array().expect("users");
    assert_eq!(users.len(), 1, "{body}");
    let file = &users[0]["files"][0];
    assert_eq!((users[0]["user"].as_str(), file["name"].as_str()), (Some("alice"), Some("notes.txt")));
    assert_eq!(file["winner"], json!({"sha256": "bb".repeat(32), "size": 5, "mtime": 20}));
    let states: Vec<(&str, &str)> = file["envoys"]
        .as_array()
        .expect("envoys")
        .iter()
        .map(|e| (e["envoy"].as_str().unwrap_or("?"), e["state"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(states, [("h1", "current"), ("h2", "outdated")]);
    assert_eq!(file["pending"][0]["target"], "h2");
    assert_eq!(file["pending"][0]["source"], "h1");
    assert_eq!(file["pending"][0]["source_addr"], "198.18.0.1:1531");

    let (_, all) = f.admin(Method::GET, "/api/v1/swarm/sync", None).await;
    let names: Vec<&str> = all["users"].as_array().expect("users").iter().filter_map(|u| u["user"].as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    let (code, body) = f.admin(Method::GET, "/api/v1/swarm/sync?user=", None).await;
    assert_eq!((code, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
}
