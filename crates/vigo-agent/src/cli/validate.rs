//! `vigo validate PATH`: every problem in a configuration, at once.

use std::path::PathBuf;

use vigo_executors::Registry;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A configuration directory (with `modules/`) or a single module file.
    pub path: PathBuf,
    /// Print problems as a JSON list.
    #[arg(long)]
    pub json: bool,
}

/// Secrets are valid references, but only the server resolves them.
fn warn_secrets(config: &vigo_model::Config) {
    for r in config.resources() {
        for path in vigo_model::secretref::refs(&r.fields) {
            eprintln!(
                "{}: warning: `{}` uses {path}, which the server resolves at publish; `vigo apply` cannot resolve it",
                r.loc,
                r.id()
            );
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    match crate::load::load(&args.path, &Registry::builtin()) {
        Ok((config, _)) => {
            if args.json {
                println!("[]");
            } else {
                let n: usize = config.modules.iter().map(|m| m.resources.len()).sum();
                println!("{}: valid ({} modules, {n} resources)", args.path.display(), config.modules.len());
                warn_secrets(&config);
            }
            Ok(0)
        }
        Err(d) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                super::print_diagnostics(&d);
            }
            Ok(1)
        }
    }
}
