//! `vigocli status`: the fleet at a glance.

use serde::Deserialize;

use super::Format;
use crate::client::Client;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    format: Format,
}

#[derive(Deserialize)]
struct Status {
    envoys: u64,
    active: u64,
    offline: u64,
    never_checked_in: u64,
    revoked: u64,
    active_version: Option<i64>,
    interval_secs: u64,
    #[serde(default)]
    states: std::collections::BTreeMap<String, u64>,
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<u8> {
    let body = client.get("/api/v1/status").await?;
    if args.format.json {
        output::json(&body)?;
        return Ok(0);
    }
    let s: Status = output::decode(body, "status")?;
    println!("server:            {}", client.server());
    println!(
        "envoys:            {} ({} active, {} offline, {} never checked in)",
        s.envoys, s.active, s.offline, s.never_checked_in
    );
    println!("revoked:           {}", s.revoked);
    println!(
        "active version:    {}",
        s.active_version.map_or_else(|| "none (nothing published yet)".into(), |v| v.to_string())
    );
    println!("check-in interval: {}s", s.interval_secs);
    if !s.states.is_empty() {
        let states: Vec<String> = s.states.iter().map(|(k, v)| format!("{v} {}", k.replace('_', " "))).collect();
        println!("convergence:       {}", states.join(", "));
    }
    Ok(0)
}
