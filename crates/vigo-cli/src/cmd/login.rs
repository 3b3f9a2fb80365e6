//! `vigocli login`: check the credentials against the server, then save them.

use crate::client::Client;
use crate::credentials::{self, ConnectionArgs, Saved};

/// Takes --server, --token-file and --ca (or their environment variables).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(connection: &ConnectionArgs, _args: Args) -> anyhow::Result<u8> {
    let creds = connection.resolve()?;
    let path = credentials::saved_path()
        .ok_or_else(|| anyhow::anyhow!("neither XDG_CONFIG_HOME nor HOME is set: nowhere to save the login"))?;
    let client = Client::new(creds.clone())?;
    // Saving credentials the server refuses would only move the failure to the next
    // command; the server records the login in its audit trail.
    client.ok(reqwest::Method::POST, "/api/v1/login", None).await?;
    credentials::save(&path, &Saved { server: creds.server.clone(), token: creds.token, ca: creds.ca_pem })?;
    println!("logged in to {}; saved {}", creds.server, path.display());
    Ok(0)
}
