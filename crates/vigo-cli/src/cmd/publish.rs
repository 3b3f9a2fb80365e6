//! `vigocli publish`: validate the server's configuration directory and activate it.

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::Format;
use crate::client::Client;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Why this version exists, shown by `vigocli versions list`.
    #[arg(short, long, value_name = "MSG")]
    message: Option<String>,
    #[command(flatten)]
    format: Format,
}

#[derive(Deserialize)]
struct Published {
    version: i64,
    modules: u64,
    envoys: u64,
}

#[derive(Deserialize)]
struct Refused {
    #[serde(default)]
    problems: Vec<Problem>,
}

#[derive(Deserialize)]
struct Problem {
    file: String,
    line: u64,
    col: u64,
    message: String,
    hint: Option<String>,
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<u8> {
    let body = match &args.message {
        Some(m) => json!({ "message": m }),
        None => json!({}),
    };
    let reply = client.call(Method::POST, "/api/v1/publish", Some(&body)).await?;
    if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
        if args.format.json {
            output::json(&reply.body)?;
        }
        let refused: Refused = output::decode(reply.body, "publish refusal")?;
        for p in &refused.problems {
            eprintln!("{}:{}:{}: {}", p.file, p.line, p.col, p.message);
            if let Some(h) = &p.hint {
                eprintln!("  hint: {h}");
            }
        }
        eprintln!("{} problem(s); nothing was published", refused.problems.len());
        return Ok(1);
    }
    if !reply.status.is_success() {
        return Err(client.refusal(&reply));
    }
    if args.format.json {
        output::json(&reply.body)?;
        return Ok(0);
    }
    let p: Published = output::decode(reply.body, "publish result")?;
    println!("published version {}: {} module(s), {} envoy(s) enrolled", p.version, p.modules, p.envoys);
    Ok(0)
}
