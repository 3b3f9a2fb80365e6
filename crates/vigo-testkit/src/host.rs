//! One test host: a network namespace on the fleet bridge plus, per command, a
//! mount and UTS namespace that shows the host's own `/etc`, private
//! directories and hostname.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::accounts::{self, AccountFiles};
use crate::error::{Error, Result};
use crate::fleet::Shared;
use crate::helper::{self, Helper};
use crate::lease;
use crate::process::{self, Process};
use crate::sys::{self, replace_file, sh_quote};
use crate::wait;

/// How long [`Host::run`] and friends let a command run before killing it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Points DNS at a port nothing listens on, so lookups fail at once.
const RESOLV_CONF: &str =
    "# written by vigo-testkit: test hosts have no DNS\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n";
/// One connection attempt of [`Host::can_connect`].
const CONNECT_TIMEOUT_SECS: &str = "2";

/// A test host. Dropping it kills every process in it, deletes its network
/// namespace and veth, and removes its files.
#[derive(Debug)]
pub struct Host {
    fleet: Arc<Shared>,
    name: String,
    ip: Ipv4Addr,
    netns: String,
    veth: String,
    root: PathBuf,
    private_dirs: Vec<PathBuf>,
    log_seq: AtomicU32,
    accounts: Mutex<()>,
}

impl Host {
    pub(crate) fn create(fleet: Arc<Shared>, name: &str, number: u8, private_dirs: Vec<PathBuf>) -> Result<Host> {
        let index = fleet.lease.index;
        let host = Host {
            ip: fleet.address(number),
            root: fleet.host_root(name),
            fleet,
            name: name.to_owned(),
            netns: lease::netns_name(index, number),
            veth: lease::veth_name(index, number),
            private_dirs,
            log_seq: AtomicU32::new(0),
            accounts: Mutex::new(()),
        };
        // On any error below, dropping `host` removes what was created so far.
        host.create_files()?;
        host.create_network()?;
        host.fleet.host_ready(&host.name)?;
        Ok(host)
    }

    fn create_files(&self) -> Result<()> {
        let tools = self.fleet.tools;
        fs::create_dir_all(&self.root).map_err(|source| Error::io("create directory", &self.root, source))?;
        // A whole copy of /etc rather than single-file binds: tools such as
        // useradd replace files by renaming a sibling, which fails on a bound
        // file and would leave their lock and backup files in the real /etc.
        let etc = self.root.join("etc");
        sys::run(Command::new(&tools.cp).arg("-a").arg("/etc").arg(&etc))?;
        let vigo = etc.join("vigo");
        // The machine's own agent configuration must not leak into test hosts.
        if fs::symlink_metadata(&vigo).is_ok() {
            remove_any(&vigo)?;
        }
        create_dir(&vigo, 0o755)?;
        replace_file(&etc.join("hostname"), format!("{}\n", self.name))?;
        // Agents may identify a machine by its machine-id: give each host its own.
        replace_file(&etc.join("machine-id"), format!("{}\n", sys::random_hex(16)?))?;
        // Hosts have no way out, so any DNS query would wait for its timeout;
        // a nameserver on the host's own loopback refuses at once, and lookups
        // fall back to /etc/hosts without a ten-second stall.
        replace_file(&etc.join("resolv.conf"), RESOLV_CONF)?;
        for dir in &self.private_dirs {
            self.create_private_dir(dir)?;
        }
        create_dir(&self.root.join("logs"), 0o755)
    }

    fn create_private_dir(&self, dir: &Path) -> Result<()> {
        // The mount point must exist on the machine itself: the one global side
        // effect of the testkit, an empty directory that stays.
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|source| Error::io("create mount point", dir, source))?;
        }
        let meta = fs::metadata(dir).map_err(|source| Error::io("inspect", dir, source))?;
        let mirror = self.path(dir);
        fs::create_dir_all(&mirror).map_err(|source| Error::io("create directory", &mirror, source))?;
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::chown(&mirror, Some(meta.uid()), Some(meta.gid()))
            .map_err(|source| Error::io("chown", &mirror, source))?;
        fs::set_permissions(&mirror, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|source| Error::io("chmod", &mirror, source))
    }

    fn create_network(&self) -> Result<()> {
        let ns = self.netns.as_str();
        let address = format!("{}/24", self.ip);
        let gateway = self.fleet.gateway().to_string();
        sys::ip(&["netns", "add", ns])?;
        sys::ip(&["link", "add", &self.veth, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
        sys::ip(&["link", "set", &self.veth, "master", &self.fleet.bridge, "up"])?;
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", &address, "dev", "eth0"],
            &["link", "set", "eth0", "up"],
            &["route", "add", "default", "via", &gateway],
            // Lockbox announcements go to 224.0.0.44; name the interface so
            // multicast never depends on the default route.
            &["route", "add", "224.0.0.0/4", "dev", "eth0"],
        ] {
            let mut full = vec!["-n", ns];
            full.extend_from_slice(args);
            sys::ip(&full)?;
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// `ip:port` of this host.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// Name of the network namespace (for `ip netns exec` by hand).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The host's directory on the real machine: `etc/` and a mirror of each
    /// private directory (`home/`, `var/lib/vigo/`, …), plus `logs/` for the
    /// output of spawned processes.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a path as seen inside the host lives on the real machine, for
    /// assertions: paths under `/etc` or a private directory map into
    /// [`Host::root`]; any other path is shared with the machine and returned
    /// unchanged. Relative paths are taken from `/`.
    pub fn path(&self, inside: impl AsRef<Path>) -> PathBuf {
        let inside = inside.as_ref();
        let relative = inside.strip_prefix("/").unwrap_or(inside);
        let absolute = Path::new("/").join(relative);
        let private = absolute.starts_with("/etc") || self.private_dirs.iter().any(|dir| absolute.starts_with(dir));
        if private { self.root.join(relative) } else { absolute }
    }

    /// A command that runs `program args…` inside the host: its network
    /// namespace, its own `/etc` and private directories, its hostname. The
    /// command starts its own process group. Add environment, stdio or a
    /// working directory as usual, then run it with [`Host::output`] or
    /// [`Host::spawn_command`] (or std's own methods).
    pub fn command<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let tools = self.fleet.tools;
        let mut cmd = Command::new(&tools.ip);
        cmd.args(["netns", "exec"])
            .arg(&self.netns)
            .arg(&tools.unshare)
            .args(["--mount", "--uts", "--propagation", "private"])
            .arg(&tools.sh)
            .arg("-c")
            .arg(self.enter_script())
            .arg(format!("{}{}", sys::HOST_MARK, self.name))
            .arg(program)
            .args(args);
        cmd.process_group(0);
        cmd
    }

    /// The `sh` script that builds the host's view of the file system in the
    /// fresh mount namespace, then becomes the program.
    fn enter_script(&self) -> OsString {
        let tools = self.fleet.tools;
        let mount = sh_quote(tools.mount.as_os_str());
        let mut script = OsString::from("set -e\n");
        let mut bind = |from: &Path, to: &Path| {
            script.push(&mount);
            script.push(" --bind ");
            script.push(sh_quote(from.as_os_str()));
            script.push(" ");
            script.push(sh_quote(to.as_os_str()));
            script.push("\n");
        };
        bind(&self.root.join("etc"), Path::new("/etc"));
        for dir in &self.private_dirs {
            bind(&self.path(dir), dir);
        }
        script.push(sh_quote(tools.hostname.as_os_str()));
        script.push(" ");
        script.push(sh_quote(OsStr::new(&self.name)));
        script.push("\nexec \"$@\"\n");
        script
    }

    /// Runs `program args…` in the host to completion (at most
    /// [`DEFAULT_TIMEOUT`]); any exit status is returned, not an error.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.output(self.command(program, args), DEFAULT_TIMEOUT)
    }

    /// Like [`Host::run`], but a non-zero exit is an error (with stderr);
    /// returns stdout.
    pub fn run_ok<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program, args);
        let output = process::output(&mut cmd, DEFAULT_TIMEOUT)?;
        sys::check_output(&cmd, output)
    }

    /// Runs a shell script in the host (`sh -c script`).
    pub fn sh(&self, script: &str) -> Result<Output> {
        self.run("sh", ["-c", script])
    }

    /// Runs a command from [`Host::command`] to completion, killing its
    /// process group after `timeout`.
    pub fn output(&self, mut cmd: Command, timeout: Duration) -> Result<Output> {
        process::output(&mut cmd, timeout)
    }

    /// Starts `program args…` in the host; stdout and stderr go to a log file
    /// under `logs/`. The returned guard kills the process group when dropped.
    pub fn spawn<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let label = Path::new(program.as_ref())
            .file_name()
            .map_or_else(|| "process".to_owned(), |n| n.to_string_lossy().into_owned());
        let cmd = self.command(program, args);
        self.spawn_command(&label, cmd)
    }

    /// Starts a command from [`Host::command`] (with your environment and
    /// working directory); stdio is replaced by the log file.
    pub fn spawn_command(&self, label: &str, cmd: Command) -> Result<Process> {
        let seq = self.log_seq.fetch_add(1, Ordering::Relaxed);
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect();
        let log = self.root.join("logs").join(format!("{seq:03}-{safe}.log"));
        Process::spawn(cmd, &format!("{label} on {}", self.name), &log)
    }

    /// A command that runs this test executable inside the host as `helper`
    /// (see [`crate::helper`]); the test binary must contain a test named
    /// [`helper::HELPER_TEST`] at its top level.
    pub fn helper(&self, helper: &Helper) -> Result<Command> {
        self.helper_at(helper::HELPER_TEST, helper)
    }

    /// Like [`Host::helper`], for a helper test at another path (for example
    /// `tests::testkit_helper` in a unit-test module).
    pub fn helper_at(&self, test_path: &str, helper: &Helper) -> Result<Command> {
        let exe =
            std::env::current_exe().map_err(|source| Error::io("locate", "the current test executable", source))?;
        let mut cmd = self.command(exe, helper::test_args(test_path));
        cmd.env(helper::ENV_VAR, helper.encode());
        Ok(cmd)
    }

    /// Pids of every process running in the host.
    pub fn pids(&self) -> Vec<u32> {
        sys::netns_pids(&self.netns)
    }

    /// Adds group `name` with `gid` to this host only.
    pub fn add_group(&self, name: &str, gid: u32) -> Result<()> {
        self.edit_accounts(name, |files| accounts::add_group(files, name, gid))
    }

    /// Adds user `name` (uid, primary group gid — created as `name` if no group
    /// has that gid) to this host only, with an empty home `/home/<name>`
    /// owned by the user, shell `/bin/bash` and a locked password.
    pub fn add_user(&self, name: &str, uid: u32, gid: u32) -> Result<()> {
        let days = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
        self.edit_accounts(name, |files| accounts::add_user(files, name, uid, gid, days))?;
        let home = self.path(Path::new("/home").join(name));
        create_dir(&home, 0o755)?;
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).map_err(|source| Error::io("chown", &home, source))
    }

    fn edit_accounts(
        &self,
        name: &str,
        edit: impl FnOnce(&mut AccountFiles) -> std::result::Result<(), String>,
    ) -> Result<()> {
        let _serialized = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let etc = self.root.join("etc");
        let read_optional = |file: &str| fs::read_to_string(etc.join(file)).ok();
        let read = |file: &str| {
            let path = etc.join(file);
            fs::read_to_string(&path).map_err(|source| Error::io("read", path, source))
        };
        let mut files = AccountFiles {
            passwd: read("passwd")?,
            group: read("group")?,
            shadow: read_optional("shadow"),
            gshadow: read_optional("gshadow"),
        };
        edit(&mut files).map_err(|reason| Error::Account { host: self.name.clone(), name: name.to_owned(), reason })?;
        replace_file(&etc.join("passwd"), &files.passwd)?;
        replace_file(&etc.join("group"), &files.group)?;
        if let Some(shadow) = &files.shadow {
            replace_file(&etc.join("shadow"), shadow)?;
        }
        if let Some(gshadow) = &files.gshadow {
            replace_file(&etc.join("gshadow"), gshadow)?;
        }
        Ok(())
    }

    /// Cuts the host off the fleet network (its cable is pulled: addresses and
    /// routes inside stay, packets go nowhere).
    pub fn link_down(&self) -> Result<()> {
        sys::ip(&["link", "set", &self.veth, "down"]).map(drop)
    }

    /// Plugs the cable back in.
    pub fn link_up(&self) -> Result<()> {
        sys::ip(&["link", "set", &self.veth, "up"]).map(drop)
    }

    /// Waits until `port` on this host accepts TCP connections from the test
    /// process (which sits on the fleet bridge).
    pub fn wait_tcp(&self, port: u16, timeout: Duration) -> Result<()> {
        wait::wait_tcp(self.addr(port), timeout)
    }

    /// One TCP connection attempt from inside this host to `addr` (another
    /// host, or `127.0.0.1` for this one), giving up after two seconds.
    pub fn can_connect(&self, addr: SocketAddr) -> Result<bool> {
        let tools = self.fleet.tools;
        let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
        let cmd = self.command(
            &tools.timeout,
            [OsStr::new(CONNECT_TIMEOUT_SECS), tools.bash.as_os_str(), OsStr::new("-c"), OsStr::new(&script)],
        );
        Ok(self.output(cmd, DEFAULT_TIMEOUT)?.status.success())
    }

    /// Waits until a connection from inside this host to `addr` succeeds.
    pub fn wait_connect(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let what = format!("{addr} to accept connections from {}", self.name);
        wait::wait_for_some(&what, timeout, || match self.can_connect(addr) {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(err) => Some(Err(err)),
        })?
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        sys::kill_netns_processes(&self.netns);
        sys::ip_quiet(&["link", "del", &self.veth]);
        sys::ip_quiet(&["netns", "del", &self.netns]);
        let _ = fs::remove_dir_all(&self.root);
        self.fleet.forget_host(&self.name);
    }
}

fn create_dir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir(path).map_err(|source| Error::io("create directory", path, source))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| Error::io("chmod", path, source))
}

fn remove_any(path: &Path) -> Result<()> {
    let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    let removed = if is_dir { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    removed.map_err(|source| Error::io("remove", path, source))
}
