//! Reading typed columns from either backend's rows, so each row struct is decoded by
//! one function instead of one per backend.

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use crate::rows::{AdminTokenRow, BundleRow, EnvoyRow, Repeats, ReportRow, SeenRow, TokenRow, VersionRow};

type Column<T> = Result<T, sqlx::Error>;

/// The column types the schema uses.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Column<String>;
    fn opt_text(&self, column: &str) -> Column<Option<String>>;
    fn int(&self, column: &str) -> Column<i64>;
    fn opt_int(&self, column: &str) -> Column<Option<i64>>;
    fn flag(&self, column: &str) -> Column<bool>;
    fn bytes(&self, column: &str) -> Column<Vec<u8>>;
}

macro_rules! impl_columns {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, column: &str) -> Column<String> {
                self.try_get(column)
            }
            fn opt_text(&self, column: &str) -> Column<Option<String>> {
                self.try_get(column)
            }
            fn int(&self, column: &str) -> Column<i64> {
                self.try_get(column)
            }
            fn opt_int(&self, column: &str) -> Column<Option<i64>> {
                self.try_get(column)
            }
            fn flag(&self, column: &str) -> Column<bool> {
                self.try_get(column)
            }
            fn bytes(&self, column: &str) -> Column<Vec<u8>> {
                self.try_get(column)
            }
        }
    };
}

impl_columns!(SqliteRow);
impl_columns!(PgRow);

pub(crate) fn token(row: &impl Columns) -> Column<TokenRow> {
    Ok(TokenRow {
        id: row.text("id")?,
        hash: row.text("hash")?,
        hosts: row.text("hosts")?,
        created_at: row.int("created_at")?,
        expires_at: row.opt_int("expires_at")?,
        used_at: row.opt_int("used_at")?,
        used_by: row.opt_text("used_by")?,
        revoked: row.flag("revoked")?,
    })
}

pub(crate) fn admin_token(row: &impl Columns) -> Column<AdminTokenRow> {
    Ok(AdminTokenRow { id: row.text("id")?, sha256: row.text("sha256")?, created_at: row.int("created_at")? })
}

pub(crate) fn envoy(row: &impl Columns) -> Column<EnvoyRow> {
    Ok(EnvoyRow {
        name: row.text("name")?,
        signing_key: row.bytes("signing_key")?,
        cert_fingerprint: row.text("cert_fingerprint")?,
        enrolled_at: row.int("enrolled_at")?,
        revoked_at: row.opt_int("revoked_at")?,
        last_checkin: row.opt_int("last_checkin")?,
        traits_json: row.opt_text("traits_json")?,
        policy_version: row.opt_text("policy_version")?,
        last_report_json: row.opt_text("last_report_json")?,
        report_seq: row.int("report_seq")?,
        repeats: repeats(row, ["report_repeats", "report_last_seq", "report_last_at"])?,
        reports_stored: row.int("report_stored")?,
        age_recipient: row.opt_text("age_recipient")?,
    })
}

pub(crate) fn version(row: &impl Columns) -> Column<VersionRow> {
    Ok(VersionRow {
        number: row.int("number")?,
        message: row.text("message")?,
        created_at: row.int("created_at")?,
        active: row.flag("active")?,
    })
}

pub(crate) fn bundle(row: &impl Columns) -> Column<BundleRow> {
    Ok(BundleRow {
        number: row.int("number")?,
        set_key: row.text("set_key")?,
        version: row.text("version")?,
        payload: row.bytes("payload")?,
        signature: row.bytes("signature")?,
    })
}

/// Decodes every fetched row with `decode`.
pub(crate) fn all<R: Columns, T>(rows: Column<Vec<R>>, decode: fn(&R) -> Column<T>) -> Column<Vec<T>> {
    rows?.iter().map(decode).collect()
}

pub(crate) fn report(row: &impl Columns) -> Column<ReportRow> {
    Ok(ReportRow {
        envoy: row.text("envoy")?,
        seq: row.int("seq")?,
        received_at: row.int("received_at")?,
        report_json: row.text("report_json")?,
        repeats: repeats(row, ["repeats", "last_seq", "last_at"])?,
    })
}

/// A report row with its envoy's open streak (which is the row's own when it is the newest).
pub(crate) fn report_and_open(row: &impl Columns) -> Column<(ReportRow, Option<Repeats>)> {
    Ok((report(row)?, repeats(row, ["report_repeats", "report_last_seq", "report_last_at"])?))
}

/// Repeats from their `[count, last_seq, last_at]` columns; `None` for a count of 0.
pub(crate) fn repeats(row: &impl Columns, [count, last_seq, last_at]: [&str; 3]) -> Column<Option<Repeats>> {
    let n = row.int(count)?;
    if n == 0 {
        return Ok(None);
    }
    match (row.opt_int(last_seq)?, row.opt_int(last_at)?) {
        (Some(last_seq), Some(last_at)) => Ok(Some(Repeats { count: n, last_seq, last_at })),
        _ => Err(sqlx::Error::Decode(format!("`{count}` is {n} but `{last_seq}` or `{last_at}` is NULL").into())),
    }
}

pub(crate) fn seen(row: &impl Columns) -> Column<SeenRow> {
    Ok(SeenRow {
        envoy: row.text("envoy")?,
        user: row.text("username")?,
        name: row.text("name")?,
        mtime: row.int("mtime")?,
        sha256: row.text("sha256")?,
    })
}
