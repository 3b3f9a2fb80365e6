//! Test-only support: a fleet of "hosts" on one Linux machine, each running
//! the real binaries as if on its own box.
//!
//! A [`Fleet`] is a Linux bridge with its own /24 from 198.18.0.0/15 (the range
//! set aside for benchmarking networks). A [`Host`] is a network namespace on
//! that bridge (`eth0` = `198.18.x.N/24`, default route via the bridge at `.1`,
//! `224.0.0.0/4` routed to `eth0` so multicast such as lockbox announcements
//! crosses the bridge) plus, for every command, a fresh mount and UTS
//! namespace in which the host sees:
//!
//! - its own copy of `/etc` (so `/etc/passwd`, `/etc/group`, `/etc/shadow`,
//!   `/etc/hosts` listing every host of the fleet, `/etc/hostname`,
//!   `/etc/machine-id` and an empty `/etc/vigo` are per host, and tools like
//!   `useradd` work inside a host without touching the machine);
//! - its own `/home`, `/var/lib/vigo` and `/run/vigo`, plus any directory
//!   added with [`HostConfig::private_dir`];
//! - its own hostname.
//!
//! Everything else (`/usr`, `/tmp`, `/root`, the build's `target/`) is shared,
//! so the test's binaries and temp files are visible inside hosts. Ports are
//! per host, so every host uses the product's real ports. Hosts have no DNS
//! (their `resolv.conf` points at a closed port, so lookups fail at once and
//! names come from `/etc/hosts`).
//!
//! Each command gets its own mount namespace built the same way, so all
//! processes of a host see the same files; a mount made by one process inside
//! a host is not seen by the others.
//!
//! ```no_run
//! use std::time::Duration;
//! use vigo_testkit::Fleet;
//!
//! let fleet = Fleet::new("agent_checks_in")?;
//! let server = fleet.add_host("server")?;
//! let web = fleet.add_host("web-1")?;
//! web.add_user("alice", 2001, 2001)?;
//! let _srv = server.spawn("vigosrv", ["--listen", "0.0.0.0"])?;
//! server.wait_tcp(8443, Duration::from_secs(30))?;
//! web.run_ok("vigo", ["status"])?;
//! assert!(web.path("/var/lib/vigo/state").exists());
//! # Ok::<(), vigo_testkit::Error>(())
//! ```
//!
//! The test process itself sits on every fleet's bridge (address
//! [`Fleet::gateway`]), so it reaches hosts directly: `host.addr(8443)` works
//! with any HTTP client.
//!
//! For small network programs, the test binary can run itself inside a host:
//! see [`helper`].
//!
//! # Cleanup
//! Dropping a [`Host`] kills every process in it, deletes its namespace and
//! veth, and removes its files; dropping the last of a [`Fleet`] and its hosts
//! deletes the bridge, the temp directory and the subnet lease. Drops run when
//! a test panics too. A [`Process`] from [`Host::spawn`] kills its process
//! group when dropped, and prints the tail of its log if the test is
//! panicking. Runs that were killed outright are swept up by
//! [`cleanup_stale`], which [`Fleet::new`] calls: leases in
//! `/run/vigo-testkit` record the owning pid and its start time.
//!
//! # Where files live
//! A fleet's files are in `$VIGO_TESTKIT_DIR` if set, else in `/dev/shm` when it
//! is a tmpfs that allows executables and has 1 GiB free (each host copies
//! `/etc`, which is fast in memory and slow on a disk shared with parallel
//! builds), else in the system temp directory. [`Host::path`] maps a path seen
//! inside a host to its place there.
//!
//! # Requirements and side effects
//! Root, and `ip` (iproute2), `unshare` (util-linux), `mount` (mount),
//! `hostname`, `cp`/`timeout` (coreutils), `sh` and `bash`: all in a Debian 12
//! base system; a missing one is reported with its package. Side effects on
//! the machine: the state directory `/run/vigo-testkit`, and empty mount
//! points for private directories that do not exist yet (by default
//! `/var/lib/vigo` and `/run/vigo`), which are left in place. If
//! `br_netfilter` is loaded and iptables' FORWARD policy drops (hosts running
//! Docker), bridged traffic between hosts is filtered: allow it with
//! `iptables -I FORWARD -i vgb+ -o vgb+ -j ACCEPT`.

mod accounts;
mod error;
mod fleet;
pub mod helper;
mod host;
mod lease;
mod process;
mod sys;
mod wait;

pub use error::{Error, Result};
pub use fleet::{BASE_DIR_VAR, DEFAULT_PRIVATE_DIRS, Fleet, HostConfig};
pub use helper::Helper;
pub use host::{DEFAULT_TIMEOUT, Host};
pub use lease::{Cleanup, cleanup_stale};
pub use process::Process;
pub use wait::{wait_for, wait_for_some, wait_tcp};
