//! `vigocli versions list`: published versions, newest first.

use serde::Deserialize;

use super::Format;
use crate::client::Client;
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List published versions, newest first.
    List(Format),
}

#[derive(Deserialize)]
struct Version {
    version: i64,
    message: String,
    created_at: i64,
    active: bool,
}

pub async fn run(client: &Client, command: Command) -> anyhow::Result<u8> {
    let Command::List(format) = command;
    let body = client.get("/api/v1/versions").await?;
    if format.json {
        output::json(&body)?;
        return Ok(0);
    }
    let versions: Vec<Version> = output::decode(body, "version list")?;
    if versions.is_empty() {
        println!("nothing published yet; run `vigocli publish`");
        return Ok(0);
    }
    let rows = versions
        .into_iter()
        .map(|v| {
            let active = if v.active { "*" } else { "" };
            vec![v.version.to_string(), active.to_string(), output::when(v.created_at), v.message]
        })
        .collect();
    println!("{}", output::table(&["VERSION", "ACTIVE", "PUBLISHED", "MESSAGE"], rows));
    Ok(0)
}
