//! `vigocli audit list|verify`: the server's tamper-evident audit trail.

use serde::Deserialize;
use serde_json::Value;

use super::Format;
use crate::client::Client;
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the newest audit events, oldest first.
    List(ListArgs),
    /// Check that no audit event was edited, deleted or reordered; exit 1 naming the
    /// first broken link if one was.
    Verify(Format),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// How many of the newest events to show.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    #[command(flatten)]
    format: Format,
}

#[derive(Deserialize)]
struct Event {
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    subject: String,
    detail: Value,
}

#[derive(Deserialize)]
struct Verification {
    intact: bool,
    events: u64,
    broken: Option<Break>,
}

#[derive(Deserialize)]
struct Break {
    message: String,
}

pub async fn run(client: &Client, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::List(args) => list(client, args).await,
        Command::Verify(format) => verify(client, format).await,
    }
}

async fn list(client: &Client, args: ListArgs) -> anyhow::Result<u8> {
    let body = client.get(&format!("/api/v1/audit?limit={}", args.limit)).await?;
    if args.format.json {
        output::json(&body)?;
        return Ok(0);
    }
    let events: Vec<Event> = output::decode(body, "audit event list")?;
    if events.is_empty() {
        println!("no audit events");
        return Ok(0);
    }
    let rows = events
        .into_iter()
        .map(|e| vec![e.seq.to_string(), output::when(e.at), e.actor, e.action, e.subject, detail_text(&e.detail)])
        .collect();
    println!("{}", output::table(&["SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "DETAIL"], rows));
    Ok(0)
}

/// A detail object as `key=value` pairs, which reads better in a table than JSON.
fn detail_text(detail: &Value) -> String {
    match detail {
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn verify(client: &Client, format: Format) -> anyhow::Result<u8> {
    let body = client.get("/api/v1/audit/verify").await?;
    let v: Verification = output::decode(body.clone(), "audit verification")?;
    if format.json {
        output::json(&body)?;
    } else if v.intact {
        println!("audit chain intact: {} events", v.events);
    }
    if v.intact {
        return Ok(0);
    }
    let message = v.broken.map_or_else(|| "audit chain broken".to_string(), |b| b.message);
    eprintln!("{message}");
    Ok(1)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn details_read_as_pairs() {
        assert_eq!(super::detail_text(&json!({"hosts": "web-*", "expires_at": null})), "hosts=web-* expires_at=null");
        assert_eq!(super::detail_text(&json!({})), "");
        assert_eq!(super::detail_text(&json!("not json")), "not json");
    }
}
