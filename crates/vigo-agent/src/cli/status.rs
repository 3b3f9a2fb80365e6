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

/// A string from the vigosync record, safe to print: file names come from users'
/// directories and transfer orders from other envoys, so nothing in them may reach
/// the terminal unescaped.
fn shown(v: &Value) -> String {
    v.as_str().map_or_else(|| "?".to_string(), vigo_swarm::sync::escape_unprintable)
}

fn print_vigosync(v: &Value) {
    let mut out = String::new();
    write_vigosync(&mut out, v);
    print!("{out}");
}

/// The human form of the vigosync record; every name and message in it is escaped.
pub fn write_vigosync(out: &mut String, v: &Value) {
    use std::fmt::Write as _;
    let users = v["users"].as_object().filter(|u| !u.is_empty());
    let outgoing = v["outgoing"].as_u64().unwrap_or(0);
    let incoming = v["incoming"].as_object().filter(|i| !i.is_empty());
    if users.is_none() && incoming.is_none() && outgoing == 0 {
        let _ = writeln!(out, "vigosync:        no user has ~/vigosync");
        return;
    }
    let _ = writeln!(out, "vigosync:");
    for (user, u) in users.into_iter().flatten() {
        let user = vigo_swarm::sync::escape_unprintable(user);
        match u["problem"].as_str() {
            Some(_) => {
                let _ = writeln!(out, "  {user}: not synced: {}", shown(&u["problem"]));
            }
            None => {
                let _ = writeln!(out, "  {user}: {} files, {} bytes", u["files"], u["bytes"]);
            }
        }
        for skipped in u["skipped"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "    skipped {} ({})", shown(&skipped["name"]), shown(&skipped["reason"]));
        }
        if let Some(more) = u["skipped_more"].as_u64().filter(|n| *n > 0) {
            let _ = writeln!(out, "    skipped {more} more entries");
        }
        if let Some(files) = u["overflow"]["files"].as_u64().filter(|n| *n > 0) {
            let _ = writeln!(
                out,
                "    left out: {files} files ({} bytes) over the vigosync limits; they are not synced",
                u["overflow"]["bytes"].as_u64().unwrap_or(0)
            );
        }
    }
    for i in incoming.into_iter().flat_map(|m| m.values()) {
        let what = format!("{}/{} from {}", shown(&i["user"]), shown(&i["name"]), shown(&i["source"]));
        match i["error"].as_str() {
            Some(_) => {
                let _ = writeln!(out, "  incoming {what}: failed ({})", shown(&i["error"]));
            }
            None => {
                let _ = writeln!(out, "  incoming {what}: {}", shown(&i["state"]));
            }
        }
    }
    if outgoing > 0 {
        let _ = writeln!(out, "  outgoing: {outgoing} transfers being served at the last check-in");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_reach_the_terminal_escaped() {
        let hostile = "\x1b[2J\x1b[Hfake\nvigosync:        all good\u{9b}1m\u{202e}";
        let record = json!({
            "users": {
                "alice": {"dir": "/home/alice/vigosync", "files": 0, "bytes": 0,
                          "skipped": [{"name": hostile, "reason": "unprintable_name"}]},
                hostile: {"problem": hostile, "files": 0, "bytes": 0, "skipped": []}
            },
            "incoming": {"k": {"user": hostile, "name": hostile, "source": hostile, "sha256": "ab",
                               "size": 1, "state": hostile, "error": hostile, "attempts": 1, "updated_at": 1}},
            "outgoing": 0
        });
        let mut out = String::new();
        write_vigosync(&mut out, &record);
        assert!(out.contains("skipped \\u{1b}[2J\\u{1b}[Hfake\\nvigosync:"), "{out}");
        let bad: Vec<char> = out.chars().filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}').collect();
        assert!(bad.is_empty(), "unescaped {bad:?} in {out:?}");
        // Every name and message stays on its own line: no forged lines.
        assert_eq!(out.lines().count(), 5, "{out}");
        assert!(out.lines().all(|l| l == "vigosync:" || l.starts_with("  ")), "{out}");
    }
}
