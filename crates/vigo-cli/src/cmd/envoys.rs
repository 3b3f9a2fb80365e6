//! `vigocli envoys list|show|reports|revoke`: enrolled agents.

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
    /// Show one envoy's run history: its newest stored reports, each with the later
    /// runs that had the same outcome.
    Reports {
        /// The envoy's name.
        name: String,
        /// How many of the newest reports (1 to 10000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
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
        Command::Reports { name, limit, format } => reports(client, &name, limit, format).await,
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

/// A stored report as the server lists it.
#[derive(Deserialize)]
struct ReportEntry {
    seq: i64,
    received_at: i64,
    report: Value,
    repeats: Option<Repeated>,
}

async fn reports(client: &Client, name: &str, limit: u32, format: Format) -> anyhow::Result<u8> {
    let body = client.get(&format!("/api/v1/envoys/{}/reports?limit={limit}", segment(name))).await?;
    if format.json {
        output::json(&body)?;
        return Ok(0);
    }
    let entries: Vec<ReportEntry> = output::decode(body, "report list")?;
    if entries.is_empty() {
        println!("{name} has not reported a run yet");
        return Ok(0);
    }
    let rows = entries
        .into_iter()
        .map(|e| {
            let (runs, last) = match &e.repeats {
                Some(r) => (format!("#{}-#{} ({})", e.seq, r.last_seq, r.count + 1), output::when(r.last_at)),
                None => (format!("#{}", e.seq), "-".into()),
            };
            vec![runs, output::when(e.received_at), last, outcome(&e.report)]
        })
        .collect();
    println!("{}", output::table(&["RUNS", "FIRST", "LAST", "OUTCOME"], rows));
    Ok(0)
}

/// One line on what a run did: its error, or its resource counts.
fn outcome(report: &Value) -> String {
    if let Some(error) = report["error"].as_str() {
        let first = error.lines().next().unwrap_or_default();
        return format!("run failed: {first}");
    }
    let count = |key: &str| report["summary"][key].as_u64().unwrap_or(0);
    let Some(total) = report["summary"]["total"].as_u64() else {
        return "no summary".into();
    };
    let mut parts = vec![format!("{total} resources")];
    for key in ["changed", "failed", "skipped"] {
        if count(key) > 0 {
            parts.push(format!("{} {key}", count(key)));
        }
    }
    if parts.len() == 1 {
        parts.push("in sync".into());
    }
    if report["mode"].as_str() == Some("noop") {
        parts.push("(no-op)".into());
    }
    parts.join(", ")
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
