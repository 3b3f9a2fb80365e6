//! The rows the store reads and writes: plain data, no SQL.
//!
//! Timestamps are unix seconds.

/// An enrollment token. Only the bcrypt hash of its secret is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    /// bcrypt hash of the secret.
    pub hash: String,
    /// Host-name glob the token may enroll.
    pub hosts: String,
    pub created_at: i64,
    /// `None`: never expires.
    pub expires_at: Option<i64>,
    pub used_at: Option<i64>,
    /// Name of the envoy that used the token.
    pub used_by: Option<String>,
    pub revoked: bool,
}

/// An admin API token, stored as the SHA-256 of its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminTokenRow {
    pub id: String,
    /// Lowercase hex SHA-256 of the secret.
    pub sha256: String,
    pub created_at: i64,
}

/// An enrolled agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvoyRow {
    pub name: String,
    /// ED25519 public key that signs its requests.
    pub signing_key: Vec<u8>,
    /// SHA-256 fingerprint of its client certificate.
    pub cert_fingerprint: String,
    pub enrolled_at: i64,
    pub revoked_at: Option<i64>,
    pub last_checkin: Option<i64>,
    pub traits_json: Option<String>,
    /// Bundle version it last reported running.
    pub policy_version: Option<String>,
    /// Its newest stored report (the one with the highest sequence number).
    pub last_report_json: Option<String>,
    /// Sequence number of `last_report_json`, 0 without one.
    pub report_seq: i64,
    /// Later runs that reported the same outcome as `last_report_json`.
    pub repeats: Option<Repeats>,
    /// Every report up to this sequence number is stored (or was dropped as
    /// unusable): what may be acknowledged.
    pub reports_stored: i64,
    /// The age X25519 recipient (`age1…`) its secrets are sealed to; `None` for envoys
    /// enrolled before secrets existed.
    pub age_recipient: Option<String>,
}

impl EnvoyRow {
    /// A newly enrolled envoy: no check-in, traits or report yet.
    pub fn enrolled(name: &str, signing_key: Vec<u8>, cert_fingerprint: &str, enrolled_at: i64) -> Self {
        Self {
            name: name.to_owned(),
            signing_key,
            cert_fingerprint: cert_fingerprint.to_owned(),
            enrolled_at,
            revoked_at: None,
            last_checkin: None,
            traits_json: None,
            policy_version: None,
            last_report_json: None,
            report_seq: 0,
            repeats: None,
            reports_stored: 0,
            age_recipient: None,
        }
    }
}

/// One publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRow {
    pub number: i64,
    pub message: String,
    pub created_at: i64,
    /// Whether this is the version envoys are served; exactly one after the first publish.
    pub active: bool,
}

/// A signed bundle built for one module set of one publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleRow {
    /// The publish it belongs to ([`VersionRow::number`]).
    pub number: i64,
    /// Identifies the module set the bundle was built for.
    pub set_key: String,
    /// `<number>-<first 12 hex of sha256(payload)>`.
    pub version: String,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// One run report an envoy delivered from its queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRow {
    pub envoy: String,
    /// The envoy's sequence number for it: unique per envoy, increasing with run order.
    pub seq: i64,
    pub received_at: i64,
    pub report_json: String,
    /// Later runs that reported the same outcome, not stored as rows of their own.
    pub repeats: Option<Repeats>,
}

impl ReportRow {
    /// The sequence numbers of the runs this row stands for: its own and those of its
    /// repeats, when they followed it without a gap (`None` when some run in between
    /// was not reported, so the count and the range disagree).
    pub fn runs(&self) -> Option<std::ops::RangeInclusive<i64>> {
        match self.repeats {
            None => Some(self.seq..=self.seq),
            Some(r) if r.count == r.last_seq - self.seq => Some(self.seq..=r.last_seq),
            Some(_) => None,
        }
    }
}

/// Runs that repeated a stored report's outcome: their report differed from it only in
/// timings. Sequence numbers of the runs in between may be missing (a report the
/// server could not store), so `count` is kept apart from `last_seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeats {
    /// How many runs; at least 1.
    pub count: i64,
    /// The newest one's sequence number and the time it was received.
    pub last_seq: i64,
    pub last_at: i64,
}

/// A run with a new outcome, to be stored as a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewReport {
    pub seq: i64,
    pub json: String,
    /// Runs in the same delivery that repeated it; `None` for the newest row, whose
    /// repeats are the envoy's open streak.
    pub repeats: Option<Repeats>,
}

/// The newest version of one vigosync file an envoy has seen (held or received): a
/// file is delivered to an envoy only when a newer version exists, so one deleted
/// there is not pushed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRow {
    pub envoy: String,
    /// The account the file belongs to.
    pub user: String,
    /// The file's name in `~/vigosync/`.
    pub name: String,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime: i64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

/// A write the server's batching writer queues; [`crate::Store::apply_batch`] applies many
/// in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOp {
    /// An envoy checked in. Sets `last_checkin` and `policy_version`, and the traits when
    /// given. A check-in from a name the store does not know changes nothing.
    CheckIn { envoy: String, at: i64, traits_json: Option<String>, policy_version: String },
    /// Queued run reports an envoy delivered, in run order, received at `at`.
    ///
    /// `reports` are the runs with a new outcome, each stored once per `(envoy, seq)`:
    /// a resent report changes nothing, so an agent may resend whatever it was not sure
    /// was stored. `closes` records the repeats of an earlier row whose outcome these
    /// runs ended. `open` is `(seq, repeats)` of the envoy's newest row afterwards; it
    /// is written only while that row is the envoy's newest stored one, so the repeats
    /// of a row that was never stored count for nothing.
    ///
    /// `through` is `(base, highest)`: every report the agent numbered above `base` up
    /// to `highest` is here (or was dropped as unusable). The envoy's stored mark moves
    /// to `highest` only from `base` or beyond: after a delivery that was not stored it
    /// stays, so the missing reports are not acknowledged, even after a restart.
    Reports {
        envoy: String,
        at: i64,
        reports: Vec<NewReport>,
        closes: Option<(i64, Repeats)>,
        open: (i64, Option<Repeats>),
        through: (i64, i64),
    },
    /// vigosync versions envoys have seen. A row replaces the stored one only when it is
    /// newer (mtime, then hash), so a late or replayed write never moves it back; a row
    /// for an envoy the store does not know changes nothing.
    VigosyncSeen(Vec<SeenRow>),
}

impl WriteOp {
    /// Reports whose outcomes are all new (each run differs from the one before):
    /// `(sequence number, report JSON)` in run order, the agent's reports from the
    /// first of them to the last.
    pub fn new_reports(envoy: &str, at: i64, reports: Vec<(i64, String)>) -> Self {
        let newest = reports.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
        let oldest = reports.iter().map(|(seq, _)| *seq).min().unwrap_or(1);
        Self::Reports {
            through: (oldest - 1, newest),
            envoy: envoy.to_owned(),
            at,
            reports: reports.into_iter().map(|(seq, json)| NewReport { seq, json, repeats: None }).collect(),
            closes: None,
            open: (newest, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Repeats, ReportRow};

    #[test]
    fn a_row_stands_for_its_run_and_its_repeats() {
        let row =
            |repeats| ReportRow { envoy: "web-1".into(), seq: 4, received_at: 1, report_json: "{}".into(), repeats };
        assert_eq!(row(None).runs(), Some(4..=4));
        assert_eq!(row(Some(Repeats { count: 3, last_seq: 7, last_at: 2 })).runs(), Some(4..=7));
        assert_eq!(
            row(Some(Repeats { count: 2, last_seq: 7, last_at: 2 })).runs(),
            None,
            "a run in between is missing"
        );
    }
}
