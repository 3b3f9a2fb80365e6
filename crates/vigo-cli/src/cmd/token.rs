//! `vigocli token create|list|revoke`: enrollment tokens.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{Format, segment};
use crate::client::Client;
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a one-time enrollment token; its secret is shown only now.
    Create(CreateArgs),
    /// List enrollment tokens (never their secrets).
    List(Format),
    /// Revoke an enrollment token so it enrolls nothing more.
    Revoke {
        /// The token id (`vigocli token list`).
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Host-name glob the token may enroll, such as `web-*`.
    #[arg(long, value_name = "GLOB")]
    hosts: String,
    /// How long the token stays valid (90s, 30m, 24h, 7d) or `never`.
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = parse_ttl)]
    ttl: Ttl,
    #[command(flatten)]
    format: Format,
}

#[derive(Debug, Clone, Copy)]
enum Ttl {
    Secs(u64),
    Never,
}

fn parse_ttl(text: &str) -> Result<Ttl, String> {
    if text.eq_ignore_ascii_case("never") {
        return Ok(Ttl::Never);
    }
    output::parse_duration(text).map(Ttl::Secs)
}

#[derive(Deserialize)]
struct Created {
    id: String,
    token: String,
    hosts: String,
    expires_at: Option<i64>,
}

#[derive(Deserialize)]
struct Token {
    id: String,
    hosts: String,
    created_at: i64,
    expires_at: Option<i64>,
    used_at: Option<i64>,
    used_by: Option<String>,
    revoked: bool,
}

pub async fn run(client: &Client, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Create(args) => create(client, args).await,
        Command::List(format) => list(client, format).await,
        Command::Revoke { id } => {
            client.ok(Method::DELETE, &format!("/api/v1/tokens/{}", segment(&id)), None).await?;
            println!("revoked token {id}");
            Ok(0)
        }
    }
}

async fn create(client: &Client, args: CreateArgs) -> anyhow::Result<u8> {
    let mut body = json!({ "hosts": args.hosts });
    if let Ttl::Secs(secs) = args.ttl {
        body["ttl_secs"] = json!(secs);
    }
    let reply = client.ok(Method::POST, "/api/v1/tokens", Some(&body)).await?;
    if args.format.json {
        output::json(&reply)?;
        return Ok(0);
    }
    let t: Created = output::decode(reply, "token")?;
    println!("{}", t.token);
    eprintln!(
        "token {} for hosts `{}`, expires {}; it is shown only now",
        t.id,
        t.hosts,
        output::when_opt(t.expires_at, "never")
    );
    Ok(0)
}

async fn list(client: &Client, format: Format) -> anyhow::Result<u8> {
    let body = client.get("/api/v1/tokens").await?;
    if format.json {
        output::json(&body)?;
        return Ok(0);
    }
    let tokens: Vec<Token> = output::decode(body, "token list")?;
    if tokens.is_empty() {
        println!("no enrollment tokens; create one with `vigocli token create --hosts GLOB`");
        return Ok(0);
    }
    let now = output::now();
    let rows = tokens
        .into_iter()
        .map(|t| {
            let state = match (t.revoked, t.used_at, t.expires_at) {
                (true, _, _) => "revoked".to_string(),
                (false, Some(at), _) => format!("used {}", output::ago(at, now)),
                (false, None, Some(exp)) if exp <= now => "expired".to_string(),
                _ => "unused".to_string(),
            };
            vec![
                t.id,
                t.hosts,
                output::when(t.created_at),
                output::when_opt(t.expires_at, "never"),
                state,
                t.used_by.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    println!("{}", output::table(&["ID", "HOSTS", "CREATED", "EXPIRES", "STATE", "USED BY"], rows));
    Ok(0)
}
