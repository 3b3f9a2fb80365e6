//! `vigo run`: check in and converge every interval (the agent daemon), or once.

use crate::paths::AgentPaths;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One check-in and one convergence pass, then exit.
    #[arg(long)]
    pub once: bool,
    /// With --once: print the run report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    super::init_logging();
    let paths = AgentPaths::from_env();
    let rt = super::runtime()?;
    if !args.once {
        rt.block_on(crate::daemon::run_forever(&paths))?;
        return Ok(0);
    }
    let cycle = rt.block_on(once(&paths))?;
    if let Err(e) = &cycle.checked_in {
        eprintln!("vigo: check-in failed: {e}");
    }
    match &cycle.report {
        Some(r) if args.json => println!("{}", serde_json::to_string_pretty(r)?),
        Some(r) => println!("{}", crate::output::render(r, super::style(), false)),
        None => println!("no policy yet: nothing to converge"),
    }
    let failed = cycle.report.as_ref().is_some_and(|r| r.summary.failed > 0);
    Ok(if cycle.checked_in.is_err() || failed { 1 } else { 0 })
}

/// One cycle, then the transfers it brought (there is no daemon to finish them later).
async fn once(paths: &AgentPaths) -> anyhow::Result<crate::checkin::Cycle> {
    let cache = crate::sync::load_cache(paths);
    let mut scanner = vigo_swarm::scan::Scanner::new(cache.clone());
    let mut conn = crate::client::Connection::default();
    let cycle = crate::checkin::cycle(paths, &mut conn, &mut scanner, crate::checkin::Trigger::Interval).await?;
    if !cycle.orders.is_empty() {
        let swarm = crate::sync::Swarm::fetcher(paths, cache, std::sync::Arc::default())?;
        for handle in swarm.dispatch(cycle.orders.clone()) {
            let _ = handle.await;
        }
    }
    Ok(cycle)
}
