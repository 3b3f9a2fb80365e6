//! `vigo status`: what this envoy enforces, where its policy came from, its last
//! run, the results waiting to be delivered, and its traits.

use serde_json::{Value, json};

use crate::checkin::{RunState, load_bundle};
use crate::paths::{AgentPaths, AgentSettings};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The status as data (the `--json` shape).
pub fn gather(paths: &AgentPaths) -> anyhow::Result<Value> {
    let settings = AgentSettings::load(paths)?;
    let state = RunState::load(paths);
    let now = crate::checkin::now();
    let policy = match load_bundle(paths) {
        Ok(b) => {
            let cached_at = std::fs::metadata(paths.bundle()).ok().and_then(|m| m.modified().ok()).map(unix);
            let source = if state.last_checkin_error.is_none() { "server" } else { "offline cache" };
            json!({"version": b.version, "source": source, "cached_at": cached_at, "age_secs": cached_at.map(|t| now - t)})
        }
        Err(e) => json!({"version": null, "error": format!("{e:#}")}),
    };
    Ok(json!({
        "envoy": settings.name,
        "server": format!("{}:{}", settings.server, settings.grpc_port),
        "interval_secs": settings.interval_secs,
        "policy": policy,
        "last_checkin": state.last_checkin,
        "last_checkin_error": state.last_checkin_error,
        "last_run": {"at": state.last_cycle, "policy": state.last_policy, "summary": state.last_summary, "error": state.last_run_error},
        "pending_results": crate::queue::pending(paths),
        "vigosync": crate::sync::load_status(paths),
        "traits": super::traits::collect_all(),
    }))
}

fn unix(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let paths = AgentPaths::from_env();
    let mut s = gather(&paths)?;
    // Nothing the status holds should contain a secret value; this makes sure.
    crate::load::cached_scrubber(&paths).scrub_json(&mut s);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    let now = crate::checkin::now();
    let ago = |v: &Value| v.as_i64().map_or_else(|| "never".to_string(), |t| format!("{}s ago", now - t));
    println!("envoy:           {}", s["envoy"].as_str().unwrap_or("-"));
    println!("server:          {} (every {}s)", s["server"].as_str().unwrap_or("-"), s["interval_secs"]);
    match s["policy"]["version"].as_str() {
        Some(v) => println!(
            "policy:          {v} (from {}, received {})",
            s["policy"]["source"].as_str().unwrap_or("-"),
            ago(&s["policy"]["cached_at"])
        ),
        None => println!("policy:          none ({})", s["policy"]["error"].as_str().unwrap_or("not received yet")),
    }
    match s["last_checkin_error"].as_str() {
        Some(e) => println!("last check-in:   failed: {e} (last success {})", ago(&s["last_checkin"])),
        None => println!("last check-in:   {}", ago(&s["last_checkin"])),
    }
    let run = &s["last_run"];
    if let Some(e) = run["error"].as_str() {
        println!("last run:        failed: {e}");
    } else if run["summary"].is_object() {
        let n = |k: &str| run["summary"][k].as_u64().unwrap_or(0);
        println!(
            "last run:        {} — {} resources: {} changed, {} failed, {} skipped, {} unchanged",
            ago(&run["at"]),
            n("total"),
            n("changed"),
            n("failed"),
            n("skipped"),
            n("unchanged")
        );
    } else {
        println!("last run:        none yet");
    }
    println!("pending results: {}", s["pending_results"]);
    print_vigosync(&s["vigosync"]);
    println!("traits:          `vigo traits` or `vigo status --json`");
    Ok(0)
}

fn print_vigosync(v: &Value) {
    let users = v["users"].as_object().filter(|u| !u.is_empty());
    let outgoing = v["outgoing"].as_u64().unwrap_or(0);
    let incoming = v["incoming"].as_object().filter(|i| !i.is_empty());
    if users.is_none() && incoming.is_none() && outgoing == 0 {
        println!("vigosync:        no user has ~/vigosync");
        return;
    }
    println!("vigosync:");
    for (user, u) in users.into_iter().flatten() {
        match u["problem"].as_str() {
            Some(p) => println!("  {user}: not synced: {p}"),
            None => println!("  {user}: {} files, {} bytes", u["files"], u["bytes"]),
        }
        for skipped in u["skipped"].as_array().into_iter().flatten() {
            println!(
                "    skipped {} ({})",
                skipped["name"].as_str().unwrap_or("?"),
                skipped["reason"].as_str().unwrap_or("?")
            );
        }
    }
    for i in incoming.into_iter().flat_map(|m| m.values()) {
        let what = format!(
            "{}/{} from {}",
            i["user"].as_str().unwrap_or("?"),
            i["name"].as_str().unwrap_or("?"),
            i["source"].as_str().unwrap_or("?")
        );
        match i["error"].as_str() {
            Some(e) => println!("  incoming {what}: failed ({e})"),
            None => println!("  incoming {what}: {}", i["state"].as_str().unwrap_or("?")),
        }
    }
    if outgoing > 0 {
        println!("  outgoing: {outgoing} transfers being served at the last check-in");
    }
}
