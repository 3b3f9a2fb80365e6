//! `vigo apply PATH`: converge this machine to a local configuration.

use std::path::PathBuf;

use vigo_executors::{Mode, Registry};

use crate::runner::Runner;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A configuration directory (with `modules/`) or a single module file.
    pub path: PathBuf,
    /// Dry run: report what would change, with diffs, and change nothing.
    #[arg(long)]
    pub noop: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when nothing changed, 2 on changes, 4 on failures, 6 on both.
    #[arg(long)]
    pub detailed_exitcodes: bool,
    /// Show content diffs under changed resources (always on with --noop).
    #[arg(long)]
    pub diff: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let registry = Registry::builtin();
    let (config, plan) = match crate::load::load(&args.path, &registry) {
        Ok(x) => x,
        Err(d) => {
            super::print_diagnostics(&d);
            return Ok(1);
        }
    };
    let traits = super::traits::collect_all();
    let mode = if args.noop { Mode::NoOp } else { Mode::Enforce };
    let report = Runner { registry: &registry, traits: &traits, mode }.run(&config, &plan);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", crate::output::render(&report, super::style(), args.diff || args.noop));
    }
    if args.detailed_exitcodes {
        return Ok(u8::try_from(report.detailed_exit_code()).unwrap_or(1));
    }
    Ok(if report.summary.failed > 0 { 1 } else { 0 })
}
