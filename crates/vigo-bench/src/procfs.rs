//! CPU time and memory of processes and of the machine, read from `/proc` and `getrusage`.

use anyhow::Context as _;

/// Linux reports `/proc` times in USER_HZ ticks, which is 100 on every
/// architecture the kernel exposes to user space this way.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn process_cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{path}: cannot read"))?;
    // The command name is in parentheses and may hold spaces; fields resume after the last `)`.
    let rest =
        text.rsplit_once(')').map(|(_, r)| r).with_context(|| format!("{path}: no `)` after the command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let tick = |i: usize| -> anyhow::Result<f64> {
        let raw = fields.get(i).with_context(|| format!("{path}: too few fields"))?;
        let ticks: u64 = raw.parse().with_context(|| format!("{path}: field {} is `{raw}`", i + 3))?;
        Ok(ticks as f64 / TICKS_PER_SEC)
    };
    Ok(tick(11)? + tick(12)?)
}

/// A process's peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{path}: cannot read"))?;
    let line = text.lines().find_map(|l| l.strip_prefix("VmHWM:")).with_context(|| format!("{path}: no VmHWM line"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse().with_context(|| format!("{path}: VmHWM is `{kib}`"))
}

/// CPU seconds (user + system) this process has used so far.
pub fn self_cpu_secs() -> anyhow::Result<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

/// The machine's CPU time so far, summed over every CPU, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    /// Not idle: used here, or taken by the hypervisor for other guests (`steal`).
    pub busy: f64,
    pub steal: f64,
    pub total: f64,
}

/// The machine's CPU time so far, from `/proc/stat`.
pub fn machine_cpu_secs() -> anyhow::Result<MachineCpu> {
    let text = std::fs::read_to_string("/proc/stat").context("/proc/stat: cannot read")?;
    let line = text.lines().find(|l| l.starts_with("cpu ")).context("/proc/stat: no `cpu` line")?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal; guest time is already inside user.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    let steal = ticks.get(7).copied().unwrap_or(0);
    Ok(MachineCpu {
        busy: (total - idle.min(total)) as f64 / TICKS_PER_SEC,
        steal: steal as f64 / TICKS_PER_SEC,
        total: total as f64 / TICKS_PER_SEC,
    })
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures_are_plausible() {
        let pid = std::process::id();
        let base = self_cpu_secs().expect("own rusage");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        while self_cpu_secs().expect("own rusage") - base < 0.2 {
            assert!(std::time::Instant::now() < deadline, "getrusage did not advance while spinning");
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let from_proc = process_cpu_secs(pid).expect("own stat");
        let from_rusage = self_cpu_secs().expect("own rusage");
        assert!(from_rusage >= base + 0.2);
        assert!((from_proc - from_rusage).abs() < 0.1, "/proc says {from_proc}s, getrusage {from_rusage}s");
        assert!(peak_rss_kib(pid).expect("own status") > 100);
        let m = machine_cpu_secs().expect("machine");
        assert!(m.busy > 0.0 && m.busy <= m.total && m.steal <= m.busy, "{m:?}");
    }
}
