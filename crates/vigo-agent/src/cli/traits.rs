//! `vigo traits [NAME…]`: what the collectors see on this machine.

use serde_json::Value;
use vigo_collectors::Host;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Collectors to run (default: all).
    pub names: Vec<String>,
    /// Print the trait tree as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Every trait of this machine; a collector that fails is left out (and logged to stderr).
pub fn collect_all() -> Value {
    let (traits, errors) = vigo_collectors::registry::collect(&Host::local(), &[]);
    for (name, e) in errors {
        eprintln!("vigo: collector {name}: {e}");
    }
    traits
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let (traits, errors) = vigo_collectors::registry::collect(&Host::local(), &names);
    for (name, e) in &errors {
        eprintln!("vigo: collector {name}: {e}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&traits)?);
    } else {
        let mut lines = Vec::new();
        flatten("", &traits, &mut lines);
        for l in lines {
            println!("{l}");
        }
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

/// `a.b.c = value` lines, lists shown inline.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        Value::String(s) => out.push(format!("{prefix} = {s}")),
        other => out.push(format!("{prefix} = {other}")),
    }
}
