//! The agent-facing gRPC service on TCP 1530: enrollment, signed check-ins (which
//! also carry vigosync transfer orders) and the signed `Events` stream that asks an
//! envoy to check in at once.
//!
//! TLS is terminated here with the fleet's rustls config (client certificates
//! optional at the handshake, revoked ones refused there); each call then decides
//! whether it needs an identity. Every refusal is logged with its reason and
//! changes no state.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vigo_proto::agent_server::{Agent, AgentServer};
use vigo_proto::{
    Bundle, CheckInBody, CheckInResponse, EnrollRequest, EnrollResponse, EventsRequest, NotModified, QueuedReport,
    RevokedCertificates, Signed, SignedTransferOrder, check_in_response,
};
use vigo_store::{EnvoyRow, WriteOp};

use crate::fleet::Envoy;
use crate::server::Server;

pub use vigo_proto::tls_serve::{Peer, TlsConn, tls_incoming};

/// The gRPC service.
pub struct AgentService {
    pub server: Server,
}

impl AgentService {
    pub fn into_service(self) -> AgentServer<Self> {
        AgentServer::new(self).max_decoding_message_size(16 * 1024 * 1024)
    }
}

fn peer_of<T>(req: &Request<T>) -> Peer {
    req.extensions().get::<Peer>().cloned().unwrap_or(Peer {
        addr: req.remote_addr(),
        identity: None,
        fingerprint: None,
    })
}

fn refuse(peer: &Peer, envoy: &str, reason: &str, status: Status) -> Status {
    tracing::warn!(peer = ?peer.addr, envoy, reason, "request refused");
    status
}

/// A hostname an envoy may be named by: RFC 1123 labels, at most 253 bytes.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn enroll(&self, req: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        let peer = peer_of(&req);
        let r = req.into_inner();
        let host = r.hostname.trim().to_ascii_lowercase();
        if !valid_hostname(&host) {
            return Err(refuse(&peer, &host, "invalid hostname", Status::invalid_argument("invalid hostname")));
        }
        // An envoy certificate under one of the server's own names would let that
        // envoy pass for the server wherever a client checks only the name.
        if self.server.server_names.contains(&host) {
            let why = format!("`{host}` is a name of the server itself; enroll under another name");
            return Err(refuse(&peer, &host, "server's own name", Status::permission_denied(why)));
        }
        let Some(id) = vigo_pki::token::token_id(&r.token) else {
            return Err(refuse(&peer, &host, "malformed token", Status::unauthenticated("invalid enrollment token")));
        };
        let tokens = self.server.store.tokens().await.map_err(|e| Status::internal(e.to_string()))?;
        let Some(row) = tokens.into_iter().find(|t| t.id == id) else {
            return Err(refuse(&peer, &host, "unknown token", Status::unauthenticated("invalid enrollment token")));
        };
        let now = crate::now();
        let token = r.token.clone();
        let hash = row.hash.clone();
        let matches =
            tokio::task::spawn_blocking(move || vigo_pki::token::verify(&token, &hash)).await.unwrap_or(false);
        if !matches {
            return Err(refuse(
                &peer,
                &host,
                "token does not match",
                Status::unauthenticated("invalid enrollment token"),
            ));
        }
        if row.revoked {
            return Err(refuse(
                &peer,
                &host,
                "token revoked",
                Status::permission_denied("enrollment token was revoked"),
            ));
        }
        if row.used_at.is_some() {
            return Err(refuse(
                &peer,
                &host,
                "token already used",
                Status::permission_denied("enrollment token was already used"),
            ));
        }
        if row.expires_at.is_some_and(|t| t <= now) {
            return Err(refuse(
                &peer,
                &host,
                "token expired",
                Status::permission_denied("enrollment token has expired"),
            ));
        }
        let glob_ok = glob::Pattern::new(&row.hosts).is_ok_and(|p| p.matches(&host));
        if !glob_ok {
            let why = format!("hostname does not match token glob `{}`", row.hosts);
            return Err(refuse(&peer, &host, &why, Status::permission_denied(why.clone())));
        }
        let key_bytes: [u8; 32] = r.signing_public_key.as_slice().try_into().map_err(|_| {
            refuse(&peer, &host, "bad signing key", Status::invalid_argument("signing key must be 32 bytes"))
        })?;
        let key = {
            use base64::Engine as _;
            vigo_pki::PublicKey::from_b64(&base64::engine::general_purpose::STANDARD.encode(key_bytes))
                .map_err(|e| refuse(&peer, &host, "bad signing key", Status::invalid_argument(e.to_string())))?
        };
        // Secrets in this envoy's bundles are sealed to this key, so one that does not
        // parse now would only fail later, at every bundle that needs it.
        let age_recipient = vigo_pki::seal::check_recipient(&r.age_recipient).map_err(|e| {
            let why = if r.age_recipient.trim().is_empty() {
                "no age recipient sent (secrets are sealed to it; upgrade the agent)".to_string()
            } else {
                e.to_string()
            };
            refuse(&peer, &host, &why, Status::invalid_argument(why.clone()))
        })?;
        if self.server.fleet.get(&host).is_some_and(|e| e.revoked_at.is_none()) {
            return Err(refuse(
                &peer,
                &host,
                "name already enrolled",
                Status::already_exists(format!("envoy `{host}` is already enrolled; revoke it first")),
            ));
        }
        let cert = self
            .server
            .ca
            .sign_envoy_csr(&r.csr_pem, &host, 365)
            .map_err(|e| refuse(&peer, &host, "bad CSR", Status::invalid_argument(e.to_string())))?;
        let fingerprint = vigo_pki::tls::pem_fingerprint(&cert).map_err(|e| Status::internal(e.to_string()))?;
        if !self.server.store.use_token(&row.id, &host, now).await.map_err(|e| Status::internal(e.to_string()))? {
            return Err(refuse(
                &peer,
                &host,
                "token raced",
                Status::permission_denied("enrollment token was already used"),
            ));
        }
        let envoy_row = EnvoyRow {
            age_recipient: Some(age_recipient.clone()),
            ..EnvoyRow::enrolled(&host, key_bytes.to_vec(), &fingerprint, now)
        };
        self.server.store.insert_envoy(&envoy_row).await.map_err(|e| Status::internal(e.to_string()))?;
        self.server.fleet.insert(Envoy {
            name: host.clone(),
            key,
            cert_fingerprint: fingerprint,
            enrolled_at: now,
            revoked_at: None,
            last_checkin: None,
            traits: None,
            traits_digest: None,
            policy_version: None,
            last_report: None,
            reports: crate::fleet::ReportProgress::default(),
            bundle: None,
            age_recipient: Some(age_recipient),
        });
        tracing::info!(envoy = %host, token = %row.id, peer = ?peer.addr, "envoy enrolled");
        self.server
            .audit_as(
                &host,
                "enroll",
                &host,
                serde_json::json!({"token": row.id, "peer": peer.addr.map(|a| a.to_string())}),
            )
            .await;
        Ok(Response::new(EnrollResponse {
            envoy: host,
            certificate_pem: cert,
            ca_pem: self.server.ca.cert_pem().to_string(),
            bundle_public_key: self.server.bundle_key.public_key().as_bytes().to_vec(),
            bundle_key_endorsement: self.server.bundle_key_endorsement.clone(),
            interval_secs: self.server.settings.interval_secs,
        }))
    }

    async fn check_in(&self, req: Request<Signed>) -> Result<Response<CheckInResponse>, Status> {
        let peer = peer_of(&req);
        let signed = req.into_inner();
        let (identity, body, now) = self.authenticate::<CheckInBody>(&peer, &signed, "CheckIn").await?;
        self.accept(identity, body, peer.addr.map(|a| a.ip()), now).await
    }

    type EventsStream = crate::events::EventStream;

    async fn events(&self, req: Request<Signed>) -> Result<Response<Self::EventsStream>, Status> {
        let peer = peer_of(&req);
        let signed = req.into_inner();
        let (identity, _, _) = self.authenticate::<EventsRequest>(&peer, &signed, "Events").await?;
        let stream =
            self.server.events.subscribe(&identity).ok_or_else(|| Status::unavailable("server is stopping"))?;
        // Orders may have been issued while the envoy was not listening.
        if self.server.vigosync.has_orders(&identity) {
            self.server.events.poke(&identity, crate::events::REASON_ORDERS);
        }
        Ok(Response::new(stream))
    }
}

/// A signed request body that names the envoy sending it.
trait Claimed: prost::Message + Default {
    fn envoy(&self) -> &str;
}

impl Claimed for CheckInBody {
    fn envoy(&self) -> &str {
        &self.envoy
    }
}

impl Claimed for EventsRequest {
    fn envoy(&self) -> &str {
        &self.envoy
    }
}

impl AgentService {
    /// The one check every signed call goes through: a client certificate whose identity
    /// is the envoy the body names, the certificate issued at enrollment to an envoy not
    /// revoked, and a signature by its key over `method` and the body that is neither
    /// stale nor replayed. Returns the envoy's name, the decoded body and the time.
    async fn authenticate<B: Claimed>(
        &self,
        peer: &Peer,
        signed: &Signed,
        method: &str,
    ) -> Result<(String, B, i64), Status> {
        let Some(identity) = peer.identity.clone() else {
            return Err(refuse(
                peer,
                "-",
                "no client certificate",
                Status::unauthenticated("a client certificate is required"),
            ));
        };
        let body = B::decode(signed.body.as_slice()).map_err(|_| {
            let why = format!("malformed {method} body");
            refuse(peer, &identity, &why, Status::invalid_argument(why.clone()))
        })?;
        if body.envoy() != identity {
            let why = format!("certificate is for `{identity}` but the request claims `{}`", body.envoy());
            return Err(refuse(peer, &identity, &why, Status::permission_denied(why.clone())));
        }
        let (key, fingerprint) = self
            .server
            .fleet
            .active_key(&identity)
            .map_err(|why| refuse(peer, &identity, why, Status::permission_denied(why)))?;
        if peer.fingerprint.as_deref() != Some(fingerprint.as_str()) {
            return Err(refuse(
                peer,
                &identity,
                "certificate is not the one issued at enrollment",
                Status::permission_denied("certificate not current"),
            ));
        }
        let sig = vigo_pki::RequestSignature {
            timestamp: signed.timestamp,
            nonce: signed.nonce.clone(),
            signature: String::from_utf8(signed.signature.clone()).unwrap_or_default(),
        };
        let now = crate::now();
        let refused = |refusal: vigo_pki::Refusal| {
            refuse(peer, &identity, &refusal.to_string(), Status::unauthenticated(refusal.to_string()))
        };
        let pending = self.server.verifier.prepare(&key, method, &signed.body, &sig, now).map_err(refused)?;
        // Checked in a batch with other calls' signatures.
        let (pending, valid) =
            self.server.signatures.check(pending).await.ok_or_else(|| Status::unavailable("server is stopping"))?;
        self.server.verifier.admit(&pending, valid, now).map_err(refused)?;
        Ok((identity, body, now))
    }
}

impl AgentService {
    async fn accept(
        &self,
        name: String,
        body: CheckInBody,
        addr: Option<std::net::IpAddr>,
        now: i64,
    ) -> Result<Response<CheckInResponse>, Status> {
        let traits = match &body.traits_json {
            Some(bytes) => {
                let v: serde_json::Value =
                    serde_json::from_slice(bytes).map_err(|_| Status::invalid_argument("traits are not JSON"))?;
                Some((Arc::new(v), String::from_utf8_lossy(bytes).into_owned()))
            }
            None => None,
        };
        if body.reports.len() > MAX_REPORTS_PER_CHECKIN {
            let why =
                format!("{} queued reports in one check-in (at most {MAX_REPORTS_PER_CHECKIN})", body.reports.len());
            return Err(refuse_body(&name, &why));
        }
        let highest = body.reports.iter().map(|r| r.seq).max().unwrap_or(0);
        // Parsed before the lock: the reports not on their way to the store yet, which
        // the claim below will most likely find new. Should a failed commit have made
        // earlier ones new again meanwhile, those are parsed under the lock.
        let queued = self.server.fleet.reports(&name).map_or(0, |p| p.queued);
        let mut runs = usable_reports(&name, body.reports.iter().filter(|r| r.seq > queued));
        let updated = self
            .server
            .fleet
            .update(&name, |e| {
                e.last_checkin = Some(now);
                e.policy_version = Some(body.policy_version.clone()).filter(|v| !v.is_empty());
                if let Some((t, _)) = &traits {
                    if e.traits_digest.as_deref() != Some(body.traits_digest.as_str()) {
                        e.bundle = None;
                    }
                    e.traits = Some(t.clone());
                    e.traits_digest = Some(body.traits_digest.clone());
                }
                // Only reports not already on their way to the store are written.
                let claim = e.reports.claim(highest).map(|base| {
                    if base < queued {
                        let again = body.reports.iter().filter(|r| r.seq > base && r.seq <= queued);
                        runs.extend(usable_reports(&name, again));
                        runs.sort_by_key(|r| r.seq);
                    }
                    runs.retain(|r| u64::try_from(r.seq).is_ok_and(|seq| seq > base));
                    let fresh = runs.len();
                    let (plan, run) = crate::runs::plan(e.reports.queued_run, std::mem::take(&mut runs), now);
                    e.reports.queued_run = run;
                    Claim { base, highest, fresh, plan, run }
                });
                (e.traits_digest.as_deref() != Some(body.traits_digest.as_str()), e.enrolled_at, claim)
            })
            .ok_or_else(|| Status::permission_denied("unknown envoy"))?;
        let (send_traits, enrolled_at, claim) = updated;
        let sync =
            self.server.vigosync.check_in(&name, traits.as_ref().map(|(t, _)| t.as_ref()), addr, enrolled_at, now);
        for target in &sync.poke {
            self.server.events.poke(target, crate::events::REASON_ORDERS);
        }
        let check_in = WriteOp::CheckIn {
            envoy: name.clone(),
            at: now,
            traits_json: traits.map(|(_, s)| s),
            policy_version: body.policy_version.clone(),
        };
        match claim {
            None => self.server.writer.send(check_in).await,
            Some(claim) => self.store_reports(&name, now, claim, check_in).await,
        }
        // Acknowledged: what is stored, never more than this check-in carried.
        let acked_seq = self.server.fleet.reports(&name).map_or(0, |p| p.ack(highest));
        if !sync.seen.is_empty() {
            self.server.writer.send(WriteOp::VigosyncSeen(sync.seen)).await;
        }
        let policy = match self.server.fleet.bundle_for(&name) {
            Some(b) if b.version == body.policy_version => check_in_response::Policy::NotModified(NotModified {}),
            Some(b) => check_in_response::Policy::Bundle(Bundle {
                version: b.version.clone(),
                payload: b.payload.clone(),
                signature: b.signature.clone(),
            }),
            None => check_in_response::Policy::NotModified(NotModified {}),
        };
        // The list this server refuses at its own handshakes, for the envoy's peer port;
        // sent only when the envoy holds another.
        let revoked_certificates = (body.revocations_digest != self.server.revoked.digest())
            .then(|| RevokedCertificates { sha256: self.server.revoked.fingerprints() });
        Ok(Response::new(CheckInResponse {
            revoked_certificates,
            policy: Some(policy),
            interval_secs: self.server.settings.interval_secs,
            send_traits,
            acked_seq,
            transfer_orders: sync
                .orders
                .into_iter()
                .map(|o| SignedTransferOrder { payload: o.payload, signature: o.signature })
                .collect(),
        }))
    }

    /// Writes a check-in's new reports with the check-in. An answer acknowledges only
    /// stored reports, so a check-in whose reports should be acknowledged at once waits
    /// for the commit: always for a backlog (an agent back from an outage drains its
    /// queue in a few check-ins), and for a single new report while the writer is not
    /// busy. On a busy server the steady state, one new report per check-in, does not
    /// wait for the disk: it is acknowledged at the next check-in, once stored.
    async fn store_reports(&self, name: &str, now: i64, claim: Claim, check_in: WriteOp) {
        let Claim { base, highest, fresh, plan, run } = claim;
        let wait = fresh > 1 || !self.server.writer.busy();
        // Once stored, the newest row is the envoy's "last report".
        let newest = plan.rows.last().map(|r| Arc::new(r.json.clone()));
        let open = run.map_or((0, None), |r| (i64::try_from(r.seq).unwrap_or(i64::MAX), r.repeats));
        let seq = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        // Also when every report was dropped: the stored mark moves past them.
        let reports = WriteOp::Reports {
            envoy: name.to_owned(),
            at: now,
            reports: plan.rows,
            closes: plan.closes,
            open,
            through: (seq(base), seq(highest)),
        };
        let ops = vec![reports, check_in];
        let server = self.server.clone();
        let envoy = name.to_owned();
        let settle = Box::new(move |stored: bool| {
            if !stored {
                tracing::error!(envoy, "queued reports not stored; the agent will resend them");
            }
            server.fleet.update(&envoy, |e| {
                if e.reports.settle(base, highest, stored, run)
                    && let Some(json) = newest
                    && e.reports.stored_run == run
                {
                    e.last_report = Some(json);
                }
            });
        });
        if wait {
            self.server.writer.write_durably_then(ops, settle).await;
        } else {
            self.server.writer.send_then(ops, settle).await;
        }
    }
}

/// Reports a check-in carried that are new: claimed as `(base, highest]`, `fresh` of
/// them usable, sorted into rows and repeats by `plan`, leaving the streak `run`.
struct Claim {
    base: u64,
    highest: u64,
    fresh: usize,
    plan: crate::runs::Plan,
    run: Option<crate::runs::Streak>,
}

/// The queued reports worth storing, in sequence order, with their outcomes. A report
/// that is not JSON or has sequence number 0 cannot be stored and would wedge the
/// agent's queue on every resend, so it is dropped (and acknowledged with the rest)
/// with a warning. Checked here, once: a report that is not JSON would fail the
/// batched transaction it shares with other envoys' check-ins.
fn usable_reports<'a>(name: &str, reports: impl Iterator<Item = &'a QueuedReport>) -> Vec<crate::runs::Run> {
    let mut rows = Vec::new();
    for r in reports {
        let Ok(seq) = i64::try_from(r.seq) else {
            tracing::warn!(envoy = name, seq = r.seq, "report dropped: sequence number out of range");
            continue;
        };
        let json = std::str::from_utf8(&r.json).ok().filter(|_| seq != 0);
        match json.and_then(|json| crate::runs::outcome(json).map(|outcome| (json, outcome))) {
            Some((json, outcome)) => rows.push(crate::runs::Run { seq, json: json.to_owned(), outcome }),
            None => tracing::warn!(envoy = name, seq, "report dropped: not JSON or sequence number 0"),
        }
    }
    // In run order, each once, whatever order the agent sent them in.
    rows.sort_by_key(|r| r.seq);
    rows.dedup_by_key(|r| r.seq);
    rows
}

/// Most queued reports one check-in may carry; the agent sends its backlog in chunks.
pub const MAX_REPORTS_PER_CHECKIN: usize = 50;

fn refuse_body(envoy: &str, why: &str) -> Status {
    tracing::warn!(envoy, reason = why, "request refused");
    Status::invalid_argument(why.to_string())
}
