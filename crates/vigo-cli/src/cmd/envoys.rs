//! `vigocli envoys list|show|revoke`: enrolled agents.

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::{Format, segment};
use crate::client::Client;
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List every envoy with its last check-in and policy version.
    List(Format),
    /// Show one envoy with its traits and last report.
    Show {
        /// The envoy's name.
        name: String,
        #[command(flatten)]
        format: Format,
    },
    /// Revoke an envoy: its certificate and signatures are refused from now on.
    Revoke {
        /// The envoy's name.
        name: String,
    },
}

#[derive(Deserialize)]
struct Summary {
    name: String,
    enrolled_at: i64,
    last_checkin: Option<i64>,
    policy_version: Option<String>,
    revoked_at: Option<i64>,
    state: String,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(flatten)]
    summary: Summary,
    cert_fingerprint: String,
    traits: Option<Value>,
    last_report: Option<Value>,
    report_seq: i64,
    #[serde(default)]
    repeats: Option<Repeated>,
}

/// Later runs with the same outcome as the last report.
#[derive(Deserialize)]
struct Repeated {
    count: i64,
    last_seq: i64,
    last_at: i64,
}

pub async fn run(client: &Client, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::List(format) => list(client, format).await,
        Command::Show { name, format } => show(client, &name, format).await,
        Command::Revoke { name } => {
            client.ok(Method::POST, &format!("/api/v1/envoys/{}/revoke", segment(&name)), None).await?;
            println!("revoked envoy {name}");
            Ok(0)
        }
    }
}

fn checkin(last: Option<i64>, now: i64) -> String {
    last.map_or_else(|| "never".into(), |t| output::ago(t, now))
}

async fn list(client: &Client, format: Format) -> anyhow::Result<u8> {
    let body = client.get("/api/v1/envoys").await?;
    if format.json {
        output::json(&body)?;
        return Ok(0);
    }
    let envoys: Vec<Summary> = output::decode(body, "envoy list")?;
    if envoys.is_empty() {
        println!("no envoys enrolled; create a token with `vigocli token create --hosts GLOB`");
        return Ok(0);
    }
    let now = output::now();
    let rows = envoys
        .into_iter()
        .map(|e| {
            vec![
                e.name,
                checkin(e.last_checkin, now),
                e.policy_version.unwrap_or_else(|| "-".into()),
                output::when(e.enrolled_at),
                e.state.replace('_', " "),
            ]
        })
        .collect();
    println!("{}", output::table(&["NAME", "LAST CHECK-IN", "POLICY VERSION", "ENROLLED", "STATE"], rows));
    Ok(0)
}

async fn show(client: &Client, name: &str, format: Format) -> anyhow::Result<u8> {
    let body = client.get(&format!("/api/v1/envoys/{}", segment(name))).await?;
    if format.json {
        output::json(&body)?;
        return Ok(0);
    }
    let d: Detail = output::decode(body, "envoy")?;
    let s = &d.summary;
    let now = output::now();
    println!("name:             {}", s.name);
    match s.revoked_at {
        Some(t) => println!("state:            revoked {}", output::when(t)),
        None => println!("state:            {}", s.state.replace('_', " ")),
    }
    println!("enrolled:         {}", output::when(s.enrolled_at));
    println!("last check-in:    {}", checkin(s.last_checkin, now));
    println!("policy version:   {}", s.policy_version.as_deref().unwrap_or("-"));
    println!("cert fingerprint: {}", d.cert_fingerprint);
    print_json_block("traits", d.traits.as_ref())?;
    let title = match &d.repeats {
        Some(r) => format!(
            "last report (#{}, the same outcome again in {} later run{}, the newest #{} {})",
            d.report_seq,
            r.count,
            if r.count == 1 { "" } else { "s" },
            r.last_seq,
            output::when(r.last_at)
        ),
        None => format!("last report (#{})", d.report_seq),
    };
    print_json_block(&title, d.last_report.as_ref())?;
    Ok(0)
}

fn print_json_block(title: &str, value: Option<&Value>) -> anyhow::Result<()> {
    match value {
        None => println!("{title}: none yet"),
        Some(v) => {
            println!("{title}:");
            for line in serde_json::to_string_pretty(v)?.lines() {
                println!("  {line}");
            }
        }
    }
    Ok(())
}
