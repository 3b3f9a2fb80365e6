-- vigosync: the newest version of each file each envoy has seen (SQLite). Keep it
-- equivalent to migrations/postgres/0005_vigosync.sql.
-- "Seen" means held or received at some point; the server delivers a file to an envoy
-- only when the winning version is newer than what that envoy has seen, so a file
-- deleted locally is not pushed back. mtime is nanoseconds since the Unix epoch.

CREATE TABLE vigosync_seen (
    envoy    TEXT    NOT NULL REFERENCES envoys (name) ON DELETE CASCADE,
    username TEXT    NOT NULL,
    name     TEXT    NOT NULL,
    mtime    INTEGER NOT NULL,
    sha256   TEXT    NOT NULL,
    PRIMARY KEY (envoy, username, name)
) STRICT;
