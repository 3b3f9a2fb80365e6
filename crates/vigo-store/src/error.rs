//! Store errors: each names the table and the operation that failed, never a password.

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names neither SQLite nor PostgreSQL.
    #[error("unsupported storage url {url}: expected sqlite:///path or postgres://user@host/db")]
    UnsupportedUrl { url: String },

    /// The URL has the right scheme but the driver cannot parse it.
    #[error("invalid storage url {url}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// The database could not be opened or created.
    #[error("cannot open database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// Bringing the schema up to date failed.
    #[error("cannot migrate database {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// A statement over a whole table failed.
    #[error("cannot {operation} {table}: {source}")]
    Query {
        table: &'static str,
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },

    /// A statement about one row failed.
    #[error("cannot {operation} {table} row {key:?}: {source}")]
    Row {
        table: &'static str,
        operation: &'static str,
        key: String,
        #[source]
        source: sqlx::Error,
    },

    /// The row exists already (and, for envoys, is still active).
    #[error("{table} row {key:?} already exists")]
    Conflict { table: &'static str, key: String },

    /// A value bound for a JSON column is not JSON; nothing of its batch was written.
    #[error("{table} row {key:?}: {column} is not JSON")]
    NotJson { table: &'static str, key: String, column: &'static str },

    /// A bundle handed to `insert_version` belongs to another version.
    #[error("bundle {set_key:?} carries version number {bundle} but is inserted with version {version}")]
    BundleMismatch { version: i64, bundle: i64, set_key: String },
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Error context for a statement over a whole table.
pub(crate) fn on_table(table: &'static str, operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { table, operation, source }
}

/// Error context for a statement about one row; a unique-key violation becomes
/// [`StoreError::Conflict`] so callers can answer "already exists" without parsing messages.
pub(crate) fn on_row(
    table: &'static str,
    operation: &'static str,
    key: &str,
) -> impl FnOnce(sqlx::Error) -> StoreError {
    let key = key.to_owned();
    move |source| {
        let unique = matches!(&source, sqlx::Error::Database(db) if db.is_unique_violation());
        if unique { StoreError::Conflict { table, key } } else { StoreError::Row { table, operation, key, source } }
    }
}

/// The URL as it may appear in messages and logs: any password, in the user part or
/// as a `password=` parameter, is masked.
pub(crate) fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut shown = redact_userinfo(base);
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&params.join("&"));
    }
    shown
}

fn redact_userinfo(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return base.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
        None => base.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_masks_only_the_password() {
        let cases = [
            ("postgres://vigo:s3cret@db:5432/vigo", "postgres://vigo:***@db:5432/vigo"),
            ("postgres://vigo@db/vigo", "postgres://vigo@db/vigo"),
            ("postgres://a:p@ss@db/vigo?sslmode=require", "postgres://a:***@db/vigo?sslmode=require"),
            ("sqlite:///var/lib/vigo/vigo.db", "sqlite:///var/lib/vigo/vigo.db"),
            ("sqlite:vigo.db", "sqlite:vigo.db"),
            ("postgres://db/vigo?user=a@b", "postgres://db/vigo?user=a@b"),
            (
                "postgres://db/vigo?user=a&password=x&sslmode=disable",
                "postgres://db/vigo?user=a&password=***&sslmode=disable",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact(url), want, "{url}");
        }
    }
}
