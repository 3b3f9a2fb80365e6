//! A fleet: one Linux bridge with its own /24, and the hosts attached to it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::host::Host;
use crate::lease::{self, DIR_PREFIX, Lease};
use crate::sys::{self, Tools};

/// Host numbers run from .2 to .254; .1 is the bridge.
const FIRST_HOST: u8 = 2;
const LAST_HOST: u8 = 254;

/// Environment variable that chooses where fleets keep their files.
pub const BASE_DIR_VAR: &str = "VIGO_TESTKIT_DIR";
/// `/dev/shm` is used only with at least this much free space.
const MIN_SHM_FREE: u64 = 1 << 30;

/// Directories every host gets its own copy of (besides `/etc`, which is
/// always a per-host copy).
pub const DEFAULT_PRIVATE_DIRS: [&str; 3] = ["/home", "/var/lib/vigo", "/run/vigo"];

/// A set of test hosts on one bridge. Dropping the fleet (and all its hosts)
/// removes the bridge, the temp directory and the subnet lease.
#[derive(Debug)]
pub struct Fleet {
    shared: Arc<Shared>,
}

/// State shared by the fleet and its hosts: the last one dropped tears the
/// bridge down, so a host never loses its network while a test holds it.
#[derive(Debug)]
pub(crate) struct Shared {
    pub label: String,
    pub tools: &'static Tools,
    pub lease: Lease,
    pub bridge: String,
    pub dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_host: u8,
    hosts: BTreeMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    ip: Ipv4Addr,
    hosts_file: PathBuf,
    /// Set once the host's `/etc` copy is in place; before that its `hosts`
    /// may still be the machine's file (or a symlink) and must not be written.
    ready: bool,
}

/// What a host gets beyond the defaults.
#[derive(Debug, Clone)]
pub struct HostConfig {
    private_dirs: Vec<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig { private_dirs: DEFAULT_PRIVATE_DIRS.iter().map(PathBuf::from).collect() }
    }
}

impl HostConfig {
    /// Gives the host its own empty copy of `dir` (for example
    /// `/var/lib/vigosrv`). The real directory is created as an empty mount
    /// point if missing, and stays.
    pub fn private_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.private_dirs.push(dir.into());
        self
    }

    pub fn private_dirs(&self) -> &[PathBuf] {
        &self.private_dirs
    }

    fn validated(&self) -> Result<Vec<PathBuf>> {
        let mut dirs = Vec::with_capacity(self.private_dirs.len());
        for dir in &self.private_dirs {
            let invalid = |reason| Error::InvalidPrivateDir { path: dir.clone(), reason };
            if !dir.is_absolute() {
                return Err(invalid("not an absolute path"));
            }
            if dir.components().any(|c| !matches!(c, Component::RootDir | Component::Normal(_))) {
                return Err(invalid("holds `.` or `..`"));
            }
            if dir == Path::new("/") {
                return Err(invalid("the root cannot be private"));
            }
            if dir.starts_with("/etc") {
                return Err(invalid("already private: each host has its own copy of /etc"));
            }
            dirs.push(dir.clone());
        }
        // Parents before children, so a nested mount is not hidden by its parent's.
        dirs.sort();
        dirs.dedup();
        Ok(dirs)
    }
}

impl Fleet {
    /// Creates a bridge with a fresh /24 from 198.18.0.0/15. `label` only
    /// names the temp directory (use the test name). Sweeps leftovers of
    /// crashed runs first (see [`crate::cleanup_stale`]).
    pub fn new(label: &str) -> Result<Fleet> {
        let tools = sys::tools()?;
        let safe: String =
            label.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).take(40).collect();
        let base = base_dir();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{safe}-"))
            .tempdir_in(&base)
            .map_err(|source| Error::io("create temp directory in", base, source))?;
        let lease = lease::acquire(dir.path())?;
        let shared = Arc::new(Shared {
            label: label.to_owned(),
            tools,
            bridge: lease::bridge_name(lease.index),
            dir: dir.keep(),
            lease,
            state: Mutex::new(State { next_host: FIRST_HOST, hosts: BTreeMap::new() }),
        });
        // From here on, dropping `shared` undoes whatever got created.
        let gateway = format!("{}/24", shared.gateway());
        sys::ip(&["link", "add", &shared.bridge, "type", "bridge", "mcast_snooping", "0"])?;
        sys::ip(&["addr", "add", &gateway, "dev", &shared.bridge])?;
        sys::ip(&["link", "set", &shared.bridge, "up"])?;
        Ok(Fleet { shared })
    }

    /// Adds a host with the default private directories.
    pub fn add_host(&self, name: &str) -> Result<Host> {
        self.add_host_with(name, &HostConfig::default())
    }

    /// Adds a host named `name` (a valid hostname, unique in the fleet).
    pub fn add_host_with(&self, name: &str, config: &HostConfig) -> Result<Host> {
        validate_hostname(name)?;
        let private_dirs = config.validated()?;
        let number = self.shared.reserve(name)?;
        Host::create(Arc::clone(&self.shared), name, number, private_dirs)
    }

    pub fn label(&self) -> &str {
        &self.shared.label
    }

    /// The bridge's address (.1): the test process's own address on the fleet
    /// network, and the hosts' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.shared.gateway()
    }

    /// The fleet's network, like `198.18.3.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/24", lease::subnet_base(self.shared.lease.index))
    }

    /// Name of the Linux bridge.
    pub fn bridge(&self) -> &str {
        &self.shared.bridge
    }

    /// The fleet's temp directory; each host's files are under `hosts/<name>`.
    pub fn root(&self) -> &Path {
        &self.shared.dir
    }
}

impl Shared {
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        self.address(1)
    }

    pub(crate) fn address(&self, number: u8) -> Ipv4Addr {
        let [a, b, c, _] = lease::subnet_base(self.lease.index).octets();
        Ipv4Addr::new(a, b, c, number)
    }

    pub(crate) fn host_root(&self, name: &str) -> PathBuf {
        self.dir.join("hosts").join(name)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked mid-update cannot leave the map half-written
        // (every update is a single insert or remove), so the data stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims a host number and the name, before anything is created.
    fn reserve(&self, name: &str) -> Result<u8> {
        let mut state = self.state();
        if state.hosts.contains_key(name) {
            return Err(Error::DuplicateHost { fleet: self.label.clone(), name: name.to_owned() });
        }
        if state.next_host > LAST_HOST {
            return Err(Error::FleetFull { fleet: self.label.clone(), max: usize::from(LAST_HOST - FIRST_HOST + 1) });
        }
        let number = state.next_host;
        state.next_host += 1;
        let entry =
            Entry { ip: self.address(number), hosts_file: self.host_root(name).join("etc/hosts"), ready: false };
        state.hosts.insert(name.to_owned(), entry);
        Ok(number)
    }

    /// Marks a host's files complete and lists it in every host's `/etc/hosts`.
    pub(crate) fn host_ready(&self, name: &str) -> Result<()> {
        if let Some(entry) = self.state().hosts.get_mut(name) {
            entry.ready = true;
        }
        self.publish_hosts()
    }

    /// Rewrites every ready host's `/etc/hosts` to list the whole fleet.
    fn publish_hosts(&self) -> Result<()> {
        let state = self.state();
        let table = render_hosts(&self.label, state.hosts.iter().map(|(name, entry)| (name.as_str(), entry.ip)));
        for entry in state.hosts.values().filter(|entry| entry.ready) {
            sys::replace_file(&entry.hosts_file, &table)?;
        }
        Ok(())
    }

    pub(crate) fn forget_host(&self, name: &str) {
        self.state().hosts.remove(name);
        let _ = self.publish_hosts();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        sys::ip_quiet(&["link", "del", &self.bridge]);
        let _ = fs::remove_dir_all(&self.dir);
        // Last: the lease keeps the index's names ours until they are gone.
        self.lease.release();
    }
}

/// Where fleets keep their files: `$VIGO_TESTKIT_DIR` if set; else `/dev/shm`
/// when it allows executables and has room, because each host copies `/etc`
/// (about a thousand small files: milliseconds on tmpfs, up to seconds on a
/// disk shared with parallel builds); else the system temp directory.
fn base_dir() -> PathBuf {
    use nix::sys::statvfs::{FsFlags, statvfs};
    if let Some(dir) = std::env::var_os(BASE_DIR_VAR) {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    let usable = statvfs(shm).is_ok_and(|st| {
        let free = st.blocks_available().saturating_mul(st.fragment_size());
        !st.flags().intersects(FsFlags::ST_NOEXEC | FsFlags::ST_RDONLY) && free >= MIN_SHM_FREE
    });
    if usable { shm.to_path_buf() } else { std::env::temp_dir() }
}

fn render_hosts<'a>(label: &str, hosts: impl Iterator<Item = (&'a str, Ipv4Addr)>) -> String {
    let mut out = format!(
        "# written by vigo-testkit for fleet {label}\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    );
    let mut hosts: Vec<_> = hosts.collect();
    hosts.sort_by_key(|&(_, ip)| ip);
    for (name, ip) in hosts {
        let _ = writeln!(out, "{ip}\t{name}");
    }
    out
}

/// Hostname rules: lowercase letters, digits, `-` and `.`; labels neither start
/// nor end with `-`; at most 63 bytes (the kernel allows 64).
pub(crate) fn validate_hostname(name: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidHostName { name: name.to_owned(), reason };
    if name.is_empty() || name.len() > 63 {
        return Err(invalid("must be 1 to 63 characters long"));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.') {
        return Err(invalid("use lowercase letters, digits, `-` and `.` only"));
    }
    if name.split('.').any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-')) {
        return Err(invalid("each dot-separated label must be non-empty and not start or end with `-`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_the_rules() {
        for good in ["web-1", "db", "a.b-c.d", "x1"] {
            assert!(validate_hostname(good).is_ok(), "{good}");
        }
        for bad in ["", "Web", "-web", "web-", "a..b", "a b", "web_1", &"a".repeat(64)] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_table_lists_every_host_sorted_by_address() {
        let table =
            render_hosts("t", [("b", Ipv4Addr::new(198, 18, 0, 10)), ("a", Ipv4Addr::new(198, 18, 0, 2))].into_iter());
        assert!(table.ends_with("198.18.0.2\ta\n198.18.0.10\tb\n"), "{table}");
        assert!(table.contains("127.0.0.1\tlocalhost\n"));
    }

    #[test]
    fn private_dirs_are_checked_and_ordered() {
        let dirs =
            HostConfig::default().private_dir("/var/lib/vigosrv").private_dir("/home").validated().expect("valid");
        let want: Vec<PathBuf> =
            ["/home", "/run/vigo", "/var/lib/vigo", "/var/lib/vigosrv"].iter().map(PathBuf::from).collect();
        assert_eq!(dirs, want);
        for bad in ["relative", "/", "/etc/vigo", "/var/../etc", "/etc"] {
            let err = HostConfig::default().private_dir(bad).validated().expect_err(bad);
            assert!(matches!(err, Error::InvalidPrivateDir { .. }), "{bad}: {err}");
        }
    }
}
