//! `vigocli swarm sync status`: vigosync across the fleet, which envoy holds which
//! version of each file.

use serde::Deserialize;

use super::{Format, segment};
use crate::client::Client;
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// vigosync: plain per-user file sync between envoys.
    #[command(subcommand)]
    Sync(SyncCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum SyncCommand {
    /// Show which envoy holds which version of each synced file, and pending transfers.
    Status {
        /// Only this user's files.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        format: Format,
    },
}

#[derive(Deserialize)]
struct Status {
    users: Vec<User>,
    #[serde(default)]
    overflow: Vec<Overflow>,
}

/// Files of one user on one envoy that do not take part (over the limits).
#[derive(Deserialize)]
struct Overflow {
    envoy: String,
    user: String,
    left_out: Count,
    refused: Count,
}

#[derive(Deserialize)]
struct Count {
    files: u64,
    bytes: u64,
}

#[derive(Deserialize)]
struct User {
    user: String,
    files: Vec<File>,
}

#[derive(Deserialize)]
struct File {
    name: String,
    envoys: Vec<EnvoyFile>,
    pending: Vec<Pending>,
}

#[derive(Deserialize)]
struct Version {
    sha256: String,
    mtime: i64,
}

#[derive(Deserialize)]
struct EnvoyFile {
    envoy: String,
    state: String,
    held: Option<Version>,
    seen: Option<Version>,
}

#[derive(Deserialize)]
struct Pending {
    target: String,
    source: String,
}

pub async fn run(client: &Client, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Sync(SyncCommand::Status { user, format }) => status(client, user.as_deref(), format).await,
    }
}

async fn status(client: &Client, user: Option<&str>, format: Format) -> anyhow::Result<u8> {
    let path = match user {
        Some(u) => format!("/api/v1/swarm/sync?user={}", segment(u)),
        None => "/api/v1/swarm/sync".to_string(),
    };
    let body = client.get(&path).await?;
    if format.json {
        output::json(&body)?;
        return Ok(0);
    }
    let status: Status = output::decode(body, "vigosync status")?;
    if !status.overflow.is_empty() {
        let rows = status.overflow.iter().map(overflow_row).collect();
        println!("{}\n", output::table(&["ENVOY", "USER", "LEFT OUT BY ENVOY", "REFUSED BY SERVER"], rows));
    }
    if status.users.iter().all(|u| u.files.is_empty()) {
        match user {
            Some(u) => println!("no vigosync files for {u}"),
            None => println!("no vigosync files reported; a user opts in by creating ~/vigosync/ on an envoy"),
        }
        return Ok(0);
    }
    let mut rows = Vec::new();
    for u in &status.users {
        for f in &u.files {
            for e in &f.envoys {
                rows.push(row(&u.user, f, e));
            }
        }
    }
    println!("{}", output::table(&["USER", "FILE", "ENVOY", "STATE", "SHA256", "MTIME"], rows));
    Ok(0)
}

/// Files that do not sync: what the envoy left out, what the server refused.
fn overflow_row(o: &Overflow) -> Vec<String> {
    let count =
        |c: &Count| if c.files == 0 { "-".to_string() } else { format!("{} files, {} bytes", c.files, c.bytes) };
    vec![o.envoy.clone(), o.user.clone(), count(&o.left_out), count(&o.refused)]
}

/// One envoy's copy: what it holds, or for a deleted copy the version it last had.
fn row(user: &str, file: &File, e: &EnvoyFile) -> Vec<String> {
    let mut state = e.state.clone();
    if let Some(p) = file.pending.iter().find(|p| p.target == e.envoy) {
        state.push_str(&format!(", fetching from {}", p.source));
    }
    let version = e.held.as_ref().or(e.seen.as_ref());
    vec![
        user.to_string(),
        file.name.clone(),
        e.envoy.clone(),
        state,
        version.map_or_else(|| "-".into(), |v| v.sha256.chars().take(12).collect()),
        version.map_or_else(|| "-".into(), |v| output::when(v.mtime.div_euclid(1_000_000_000))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_remote_name_is_printed_escaped() {
        let hostile = "\u{1b}]0;owned\u{7}\u{1b}[2J\nalice  x.txt  h9  current";
        let status: Status = serde_json::from_value(serde_json::json!({"users": [{
            "user": hostile,
            "files": [{
                "name": hostile,
                "envoys": [{"envoy": hostile, "state": "outdated",
                            "held": {"sha256": "ab".repeat(32), "mtime": 1}, "seen": null}],
                "pending": [{"target": hostile, "source": hostile}]
            }]
        }]}))
        .expect("status");
        let (u, f) = (&status.users[0], &status.users[0].files[0]);
        let out =
            output::table(&["USER", "FILE", "ENVOY", "STATE", "SHA256", "MTIME"], vec![row(&u.user, f, &f.envoys[0])]);
        assert_eq!(out.lines().count(), 2, "no forged rows: {out}");
        assert!(out.chars().all(|c| c == '\n' || !c.is_control()), "{out:?}");
        assert!(out.contains("\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\nalice"), "{out}");
    }
}
