//! Real mutual-TLS handshakes over loopback TCP with the configs from
//! `vigo_pki::tls`: identities, foreign CAs, anonymous clients, revocation
//! (also of a session that could otherwise be resumed).

use std::sync::Arc;

use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use vigo_pki::{EnvoyTlsKey, FleetCa, RevocationList, cert_fingerprint, client_config, peer_identity, server_config};

/// What the server saw of one accepted connection.
#[derive(Debug)]
struct Accepted {
    identity: Option<String>,
    fingerprint: Option<String>,
    resumed: bool,
    alpn: Option<Vec<u8>>,
}

struct Fleet {
    ca: FleetCa,
    server_cert: String,
    server_key: String,
}

impl Fleet {
    fn new() -> Self {
        let ca = FleetCa::generate("Vigo test fleet").expect("ca");
        let (server_cert, server_key) =
            ca.issue_server_cert(&["localhost".into(), "127.0.0.1".into()]).expect("server cert");
        Self { ca, server_cert, server_key }
    }

    fn envoy(&self, name: &str) -> (String, String) {
        let key = EnvoyTlsKey::generate().expect("envoy key");
        let csr = key.csr(name).expect("csr");
        (self.ca.sign_envoy_csr(&csr, name, 30).expect("sign"), key.private_key_pem())
    }

    fn server(&self, revoked: &RevocationList, allow_anonymous: bool) -> Arc<rustls::ServerConfig> {
        let config =
            server_config(self.ca.cert_pem(), &self.server_cert, &self.server_key, revoked.clone(), allow_anonymous)
                .expect("server config");
        Arc::new(config)
    }

    fn client(&self, identity: Option<&(String, String)>) -> Arc<rustls::ClientConfig> {
        let identity = identity.map(|(cert, key)| (cert.as_str(), key.as_str()));
        Arc::new(client_config(self.ca.cert_pem(), identity).expect("client config"))
    }
}

/// Why a connection failed, as each side saw it.
#[derive(Debug)]
struct Refused {
    server: Option<String>,
    client: Option<String>,
}

impl Refused {
    /// The server itself refused (rather than only the client giving up).
    fn by_server(&self) -> bool {
        self.server.is_some()
    }
}

/// One handshake plus a one-line exchange. The exchange matters: in TLS 1.3
/// the client finishes its side before the server has judged its
/// certificate, so only a round trip shows whether the server accepted it.
async fn connect(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Result<Accepted, Refused> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let certs = conn.peer_certificates().unwrap_or_default();
        let accepted = Accepted {
            identity: peer_identity(certs),
            fingerprint: certs.first().map(|c| cert_fingerprint(c)),
            resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        };
        tls.write_all(b"welcome\n").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(accepted)
    });

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let client_result = async {
        let mut tls = TlsConnector::from(client).connect(name, tcp).await.map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await.map_err(|e| e.to_string())?;
        if reply != b"welcome\n" {
            return Err(format!("unexpected reply {reply:?}"));
        }
        Ok(())
    }
    .await;
    let server_result = server_task.await.expect("server task");
    match (server_result, client_result) {
        (Ok(accepted), Ok(())) => Ok(accepted),
        (server, client) => Err(Refused { server: server.err(), client: client.err() }),
    }
}

#[tokio::test]
async fn envoy_with_a_fleet_certificate_is_identified() {
    let fleet = Fleet::new();
    let envoy = fleet.envoy("web-01.example");
    let accepted =
        connect(fleet.server(&RevocationList::new(), false), fleet.client(Some(&envoy))).await.expect("handshake");
    assert_eq!(accepted.identity.as_deref(), Some("web-01.example"));
    assert_eq!(accepted.fingerprint, Some(vigo_pki::tls::pem_fingerprint(&envoy.0).expect("pem")));
    assert_eq!(accepted.alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let fleet = Fleet::new();
    let other = Fleet::new();
    let foreign = other.envoy("web-01.example");
    // The client trusts our server but presents a certificate from another CA.
    let identity = (foreign.0.as_str(), foreign.1.as_str());
    let client = Arc::new(client_config(fleet.ca.cert_pem(), Some(identity)).expect("client config"));
    for allow_anonymous in [false, true] {
        let err = connect(fleet.server(&RevocationList::new(), allow_anonymous), client.clone())
            .await
            .expect_err("foreign certificate accepted");
        assert!(err.by_server(), "{err:?}");
    }
}

#[tokio::test]
async fn client_refuses_a_server_outside_the_fleet() {
    let fleet = Fleet::new();
    let other = Fleet::new();
    let envoy = fleet.envoy("web-01.example");
    let err = connect(other.server(&RevocationList::new(), true), fleet.client(Some(&envoy)))
        .await
        .expect_err("foreign server accepted");
    let client = err.client.expect("the client refused");
    // Both CAs carry the same name, so webpki finds "our" CA as issuer and the
    // signature check is what fails.
    assert!(client.contains("invalid peer certificate"), "{client}");
}

#[tokio::test]
async fn anonymous_clients_only_when_allowed() {
    let fleet = Fleet::new();
    let refused = connect(fleet.server(&RevocationList::new(), false), fleet.client(None)).await;
    assert!(refused.expect_err("anonymous accepted").by_server());

    let accepted =
        connect(fleet.server(&RevocationList::new(), true), fleet.client(None)).await.expect("anonymous allowed");
    assert_eq!(accepted.identity, None);
    assert_eq!(accepted.fingerprint, None);
}

#[tokio::test]
async fn revocation_cuts_an_envoy_off_at_the_next_handshake() {
    let fleet = Fleet::new();
    let revoked = RevocationList::new();
    let server = fleet.server(&revoked, true);
    let (web, db) = (fleet.envoy("web-01"), fleet.envoy("db-01"));
    // One client config per envoy, reused: it carries the session tickets.
    let (web_client, db_client) = (fleet.client(Some(&web)), fleet.client(Some(&db)));

    let first = connect(server.clone(), web_client.clone()).await.expect("full handshake");
    assert!(!first.resumed);
    let second = connect(server.clone(), web_client.clone()).await.expect("resumed handshake");
    assert!(second.resumed, "the session must be resumable, or this test proves nothing");
    assert_eq!(second.identity.as_deref(), Some("web-01"), "identity survives resumption");

    connect(server.clone(), db_client.clone()).await.expect("db-01 before");
    let fingerprint = first.fingerprint.expect("web-01 presented a certificate");
    assert!(revoked.revoke(&fingerprint).expect("valid fingerprint"));

    let err = connect(server.clone(), web_client.clone()).await.expect_err("revoked envoy resumed or reconnected");
    assert!(err.by_server(), "{err:?}");
    let err = connect(server.clone(), web_client).await.expect_err("revoked envoy got in on retry");
    assert!(err.by_server(), "{err:?}");

    let db_after = connect(server, db_client).await.expect("db-01 still gets in");
    assert_eq!(db_after.identity.as_deref(), Some("db-01"));
    assert!(!db_after.resumed, "revocation flushed db-01's cached session too");
}

/// Clients of the fleet server accept the server's certificate and refuse an
/// envoy's, even one named like the server: an envoy serving its own certificate
/// (the swarm port does) cannot pass for the server. Pinned-fingerprint
/// enrollment refuses it too.
#[tokio::test]
async fn only_the_server_certificate_passes_for_the_server() {
    let fleet = Fleet::new();
    let envoy = fleet.envoy("web-1");
    let to_server = |identity: Option<&(String, String)>| {
        let identity = identity.map(|(c, k)| (c.as_str(), k.as_str()));
        Arc::new(vigo_pki::server_client_config(fleet.ca.cert_pem(), identity).expect("client config"))
    };
    connect(fleet.server(&RevocationList::new(), false), to_server(Some(&envoy))).await.expect("the real server");
    // As `vigosrv` does, both present their chain with the CA in it.
    let with_ca = |cert: &str| format!("{}\n{}", cert.trim_end(), fleet.ca.cert_pem());
    let real = server_config(
        fleet.ca.cert_pem(),
        &with_ca(&fleet.server_cert),
        &fleet.server_key,
        RevocationList::new(),
        true,
    )
    .expect("server config");
    let pin = vigo_pki::pinned::PinnedCa::new(&fleet.ca.fingerprint());
    connect(Arc::new(real), Arc::new(pin.client_config().expect("pinned"))).await.expect("the real server, pinned");

    // The impostor: the envoy's own certificate, issued for "localhost", presented
    // as a TLS server certificate. A client checking only chain and name accepts it.
    let impostor_cert = fleet.envoy("localhost");
    let impostor = Arc::new(
        server_config(fleet.ca.cert_pem(), &with_ca(&impostor_cert.0), &impostor_cert.1, RevocationList::new(), true)
            .expect("impostor config"),
    );
    connect(impostor.clone(), fleet.client(None)).await.expect("the impostor fools a chain-and-name client");
    let refused = connect(impostor.clone(), to_server(Some(&envoy))).await.expect_err("impostor accepted");
    let why = refused.client.expect("the client refused");
    assert!(why.contains("not the fleet server"), "{why}");
    let pin = vigo_pki::pinned::PinnedCa::new(&fleet.ca.fingerprint());
    let refused = connect(impostor, Arc::new(pin.client_config().expect("pinned"))).await.expect_err("pinned");
    assert!(refused.client.is_some_and(|w| w.contains("not the fleet server")));
    assert_eq!(pin.ca_pem(), None, "nothing is kept from a refused handshake");
}
