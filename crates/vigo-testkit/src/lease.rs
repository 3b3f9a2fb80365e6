//! Subnet leases shared by every test process on the machine, and the sweep
//! that removes what crashed runs left behind.
//!
//! Each fleet leases one index in `0..512`, which fixes its /24 inside
//! 198.18.0.0/15 and the names of everything it creates (`vgb<i>` bridge,
//! `vgt<i>h<n>` namespaces, `vgv<i>h<n>` veths). The lease is a marker file
//! `/run/vigo-testkit/fleets/<i>` holding the owner's pid, the owner's start
//! time (so a reused pid does not look alive) and the fleet's temp directory.
//! Leasing and sweeping happen under an exclusive `flock` on
//! `/run/vigo-testkit/lock`; the kernel drops that lock when a process dies,
//! so a crash can never wedge other runs.
//!
//! Ordering that keeps the sweep safe: a marker is written before any name of
//! its index exists, and removed only after its names are gone. So under the
//! lock, a name whose index has no live marker belongs to a dead run.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// Where leases and the lock live; on tmpfs, so a reboot clears it.
pub(crate) const STATE_DIR: &str = "/run/vigo-testkit";
/// Number of /24 subnets in 198.18.0.0/15.
pub(crate) const SUBNET_COUNT: u16 = 512;
/// Temp directories of fleets start with this, which the sweep checks before
/// deleting a directory named in a marker.
pub(crate) const DIR_PREFIX: &str = "vigo-testkit-";

pub(crate) fn bridge_name(index: u16) -> String {
    format!("vgb{index}")
}

pub(crate) fn netns_name(index: u16, host: u8) -> String {
    format!("vgt{index}h{host}")
}

pub(crate) fn veth_name(index: u16, host: u8) -> String {
    format!("vgv{index}h{host}")
}

/// Network address of the lease's /24.
pub(crate) fn subnet_base(index: u16) -> Ipv4Addr {
    let [hi, lo] = index.to_be_bytes();
    Ipv4Addr::new(198, 18 + hi, lo, 0)
}

/// The lease index a testkit bridge, veth or namespace name belongs to, or
/// `None` for names the testkit never creates.
fn owner_index(name: &str) -> Option<u16> {
    if let Some(rest) = name.strip_prefix("vgb") {
        return parse_index(rest);
    }
    let rest = name.strip_prefix("vgt").or_else(|| name.strip_prefix("vgv"))?;
    let (index, host) = rest.split_once('h')?;
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    parse_index(index)
}

fn parse_index(digits: &str) -> Option<u16> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&i| i < SUBNET_COUNT)
}

/// A held subnet index; [`Lease::release`] gives it back once the fleet's
/// names are gone.
#[derive(Debug)]
pub(crate) struct Lease {
    pub index: u16,
    marker: PathBuf,
}

impl Lease {
    pub(crate) fn release(&self) {
        let _ = fs::remove_file(&self.marker);
    }
}

/// What [`cleanup_stale`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleanup {
    /// Lease indices whose owner was gone.
    pub fleets: Vec<u16>,
    /// Network namespaces deleted (their processes were killed first).
    pub namespaces: Vec<String>,
    /// Bridges and veths deleted.
    pub links: Vec<String>,
}

#[derive(Debug, PartialEq)]
struct Marker {
    pid: u32,
    start: u64,
    root: PathBuf,
}

impl Marker {
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{}\n{}\n", self.pid, self.start).into_bytes();
        out.extend_from_slice(self.root.as_os_str().as_bytes());
        out.push(b'\n');
        out
    }

    fn decode(raw: &[u8]) -> Option<Marker> {
        let mut lines = raw.split(|&b| b == b'\n');
        let pid = std::str::from_utf8(lines.next()?).ok()?.parse().ok()?;
        let start = std::str::from_utf8(lines.next()?).ok()?.parse().ok()?;
        let root = PathBuf::from(OsStr::from_bytes(lines.next()?));
        Some(Marker { pid, start, root })
    }

    fn owner_alive(&self) -> bool {
        sys::process_start_time(self.pid) == Some(self.start)
    }
}

fn fleets_dir() -> PathBuf {
    Path::new(STATE_DIR).join("fleets")
}

/// Takes the machine-wide lock; dropping the file releases it.
fn lock() -> Result<File> {
    let dir = fleets_dir();
    fs::create_dir_all(&dir).map_err(|source| Error::io("create directory", &dir, source))?;
    let path = Path::new(STATE_DIR).join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::io("open lock file", &path, source))?;
    file.lock().map_err(|source| Error::io("lock", &path, source))?;
    Ok(file)
}

/// Leases a free subnet for a fleet whose files live under `root`, after
/// sweeping up what dead runs left.
pub(crate) fn acquire(root: &Path) -> Result<Lease> {
    let _lock = lock()?;
    let (live, _) = sweep()?;
    let index = (0..SUBNET_COUNT).find(|i| !live.contains(i)).ok_or(Error::SubnetsExhausted { count: SUBNET_COUNT })?;
    let pid = std::process::id();
    let marker = Marker { pid, start: sys::process_start_time(pid).unwrap_or_default(), root: root.to_path_buf() };
    let path = fleets_dir().join(index.to_string());
    write_marker(&path, &marker)?;
    Ok(Lease { index, marker: path })
}

fn write_marker(path: &Path, marker: &Marker) -> Result<()> {
    // Written whole under a temporary name and renamed, so a sweep never reads
    // half a marker.
    let tmp = path.with_extension("tmp");
    File::create(&tmp)
        .and_then(|mut file| file.write_all(&marker.encode()))
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| Error::io("write lease marker", path, source))
}

/// Removes namespaces, bridges, veths, temp directories and leases left by
/// test runs whose process is gone (a crash, a SIGKILL, a CI timeout), and
/// kills processes still running in those namespaces. [`crate::Fleet::new`]
/// calls it; call it yourself to tidy a developer machine.
pub fn cleanup_stale() -> Result<Cleanup> {
    sys::tools()?;
    let _lock = lock()?;
    Ok(sweep()?.1)
}

/// Under the lock: drops dead leases and every testkit name whose index has no
/// live lease. Returns the live indices and what was removed.
fn sweep() -> Result<(BTreeSet<u16>, Cleanup)> {
    let mut report = Cleanup::default();
    let mut live = BTreeSet::new();
    let dir = fleets_dir();
    let entries = fs::read_dir(&dir).map_err(|source| Error::io("list", &dir, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::io("list", &dir, source))?;
        let path = entry.path();
        let index = entry.file_name().to_str().and_then(parse_index);
        let marker = fs::read(&path).ok().and_then(|raw| Marker::decode(&raw));
        match (index, marker) {
            (Some(index), Some(marker)) if marker.owner_alive() => {
                live.insert(index);
            }
            (index, marker) => {
                if let Some(marker) = marker {
                    remove_fleet_dir(&marker.root);
                }
                if let Some(index) = index {
                    report.fleets.push(index);
                }
                let _ = fs::remove_file(&path);
            }
        }
    }
    let namespaces = sys::ip(&["netns", "list"])?;
    for line in namespaces.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if owner_index(name).is_some_and(|i| !live.contains(&i)) {
            sys::kill_netns_processes(name);
            sys::ip_quiet(&["netns", "del", name]);
            report.namespaces.push(name.to_owned());
        }
    }
    let links = sys::ip(&["-o", "link", "show"])?;
    for name in links.lines().filter_map(link_name) {
        if owner_index(name).is_some_and(|i| !live.contains(&i)) {
            sys::ip_quiet(&["link", "del", name]);
            report.links.push(name.to_owned());
        }
    }
    Ok((live, report))
}

/// The interface name in a line of `ip -o link show`: `7: vgv3h2@if6: <…`.
fn link_name(line: &str) -> Option<&str> {
    let field = line.split(": ").nth(1)?;
    Some(field.split('@').next().unwrap_or(field))
}

fn remove_fleet_dir(root: &Path) {
    // The path comes from a root-owned file, but check the shape anyway:
    // the sweep must never delete anything the testkit did not create.
    let ours =
        root.is_absolute() && root.file_name().and_then(OsStr::to_str).is_some_and(|name| name.starts_with(DIR_PREFIX));
    if ours {
        // Best effort: a directory that is already gone is the goal reached.
        let _ = fs::remove_dir_all(root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn names_map_back_to_their_lease() {
        assert_eq!(owner_index(&bridge_name(7)), Some(7));
        assert_eq!(owner_index(&netns_name(511, 254)), Some(511));
        assert_eq!(owner_index(&veth_name(0, 2)), Some(0));
        for foreign in ["vgb", "vgb512", "vgbx", "vgt3", "vgt3h", "vgt3hx", "eth0", "vgv-1h2"] {
            assert_eq!(owner_index(foreign), None, "{foreign}");
        }
        assert!(netns_name(511, 254).len() <= 15);
    }

    #[test]
    fn subnets_cover_the_benchmarking_range() {
        assert_eq!(subnet_base(0), Ipv4Addr::new(198, 18, 0, 0));
        assert_eq!(subnet_base(255), Ipv4Addr::new(198, 18, 255, 0));
        assert_eq!(subnet_base(256), Ipv4Addr::new(198, 19, 0, 0));
        assert_eq!(subnet_base(511), Ipv4Addr::new(198, 19, 255, 0));
    }

    #[test]
    fn link_names_are_read_from_ip_output() {
        assert_eq!(link_name("7: vgv3h2@if6: <BROADCAST> mtu 1500"), Some("vgv3h2"));
        assert_eq!(link_name("5: vgb3: <BROADCAST> mtu 1500"), Some("vgb3"));
        assert_eq!(link_name("nonsense"), None);
    }

    #[test]
    fn markers_round_trip_and_reject_garbage() {
        let marker = Marker { pid: 42, start: 99, root: PathBuf::from("/tmp/vigo-testkit-x") };
        assert_eq!(Marker::decode(&marker.encode()), Some(marker));
        assert_eq!(Marker::decode(b"not a pid\n1\n/x\n"), None);
        assert_eq!(Marker::decode(b"1\n"), None);
    }

    #[test]
    fn liveness_needs_the_same_start_time() {
        let pid = std::process::id();
        let start = sys::process_start_time(pid).expect("own stat readable");
        let root = PathBuf::from("/x");
        assert!(Marker { pid, start, root: root.clone() }.owner_alive());
        assert!(!Marker { pid, start: start + 1, root }.owner_alive());
    }

    /// Plants the leftovers of a crashed run (a lease whose owner is gone, its
    /// bridge, a namespace with a process inside, its temp directory) and checks
    /// that the sweep removes them all.
    #[test]
    fn sweep_removes_leftovers_of_a_dead_owner() {
        let tools = sys::tools().expect("testkit requirements");
        let root = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir().expect("temp dir").keep();
        let index = {
            let _lock = lock().expect("lock");
            let (live, _) = sweep().expect("sweep");
            let index = (0..SUBNET_COUNT).find(|i| !live.contains(i)).expect("free");
            // Our own pid with a wrong start time: a pid that was reused.
            let pid = std::process::id();
            let start = sys::process_start_time(pid).expect("stat") + 1;
            let marker = Marker { pid, start, root: root.clone() };
            write_marker(&fleets_dir().join(index.to_string()), &marker).expect("marker");
            sys::ip(&["link", "add", &bridge_name(index), "type", "bridge"]).expect("bridge");
            sys::ip(&["netns", "add", &netns_name(index, 2)]).expect("netns");
            index
        };
        let mut orphan = Command::new(&tools.ip)
            .args(["netns", "exec", &netns_name(index, 2), "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep in namespace");
        // Sweep only once the orphan is really inside the namespace; under load
        // `ip netns exec` can still be setting up when the sweep would run.
        let ns = netns_name(index, 2);
        crate::wait::wait_for("orphan enters its namespace", std::time::Duration::from_secs(20), || {
            sys::ip(&["netns", "pids", &ns]).is_ok_and(|pids| !pids.trim().is_empty())
        })
        .expect("orphan in namespace");

        cleanup_stale().expect("cleanup");

        let status = orphan.wait().expect("orphan reaped");
        assert!(!status.success(), "orphan was killed: {status}");
        assert!(!root.exists(), "temp dir removed");
        assert!(!fleets_dir().join(index.to_string()).exists(), "lease dropped");
        let namespaces = sys::ip(&["netns", "list"]).expect("netns list");
        assert!(
            !namespaces.lines().any(|l| l.split_whitespace().next() == Some(&netns_name(index, 2))),
            "namespace deleted: {namespaces}"
        );
        assert!(sys::ip(&["link", "show", &bridge_name(index)]).is_err(), "bridge deleted");
    }
}
