//! Real namespaces, real bridge: what later tests rely on, checked end to end.

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vigo_testkit::{Error, Fleet, Helper, HostConfig, helper};

const WAIT: Duration = Duration::from_secs(20);

/// Lets hosts run this binary as a small network program.
#[test]
fn testkit_helper() {
    helper::run_if_requested();
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_exists(name: &str) -> bool {
    ip(&["netns", "list"]).lines().any(|line| line.split_whitespace().next() == Some(name))
}

fn link_exists(name: &str) -> bool {
    Command::new("ip").args(["link", "show", name]).output().expect("ip runs").status.success()
}

#[test]
fn hosts_talk_tcp_across_the_bridge_and_resolve_each_other() {
    let fleet = Fleet::new("tcp").expect("fleet");
    let a = fleet.add_host("web-1").expect("web-1");
    let b = fleet.add_host("web-2").expect("web-2");
    assert_ne!(a.ip(), b.ip());

    let serve = b.helper(&Helper::TcpServe { addr: b.addr(7000) }).expect("helper");
    let server = b.spawn_command("tcp-serve", serve).expect("server");
    b.wait_tcp(7000, WAIT).expect("server listens, reachable from the test process");

    let probe = a.helper(&Helper::TcpProbe { addr: b.addr(7000), timeout: Duration::from_secs(5) }).expect("helper");
    let out = a.output(probe, WAIT).expect("probe ran");
    assert!(out.status.success(), "probe: {out:?}\nserver log: {}", server.log());
    assert_eq!(helper::reply(&stdout(&out)), Some("web-2"), "answered by b's hostname");

    let hosts = a.run_ok("getent", ["hosts", "web-2"]).expect("getent");
    assert_eq!(hosts.split_whitespace().next(), Some(b.ip().to_string().as_str()));
    // A host added later appears in earlier hosts' /etc/hosts too.
    let c = fleet.add_host("db").expect("db");
    let hosts = a.run_ok("getent", ["hosts", "db"]).expect("getent db");
    assert!(hosts.starts_with(&c.ip().to_string()), "{hosts}");

    assert!(a.can_connect(b.addr(7000)).expect("connect attempt"));
    assert!(!a.can_connect(b.addr(7001)).expect("connect attempt"), "nothing on 7001");
}

#[test]
fn each_host_has_its_own_hostname_machine_id_and_etc() {
    let fleet = Fleet::new("names").expect("fleet");
    let a = fleet.add_host("alpha").expect("alpha");
    let b = fleet.add_host("beta").expect("beta");
    let real = fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");

    for host in [&a, &b] {
        let seen = host.run_ok("hostname", [""; 0]).expect("hostname");
        assert_eq!(seen.trim(), host.name());
        let file = host.run_ok("cat", ["/etc/hostname"]).expect("cat");
        assert_eq!(file.trim(), host.name());
        let vigo = host.run_ok("ls", ["-A", "/etc/vigo"]).expect("ls");
        assert_eq!(vigo, "", "/etc/vigo starts empty");
    }
    let id_a = a.run_ok("cat", ["/etc/machine-id"]).expect("machine-id");
    let id_b = b.run_ok("cat", ["/etc/machine-id"]).expect("machine-id");
    assert_ne!(id_a, id_b);
    assert_eq!(id_a.trim().len(), 32);
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname"),
        real,
        "the machine keeps its hostname"
    );
}

#[test]
fn private_dirs_are_per_host_and_mapped_by_path() {
    let fleet = Fleet::new("dirs").expect("fleet");
    let config = HostConfig::default().private_dir("/srv");
    let a = fleet.add_host_with("a", &config).expect("a");
    let b = fleet.add_host_with("b", &config).expect("b");
    let script = "echo a > /var/lib/vigo/state && echo conf > /etc/vigo/agent.yaml \
                  && echo extra > /srv/x && mkdir -p /run/vigo/s";
    let out = a.sh(script).expect("sh");
    assert!(out.status.success(), "{out:?}");

    assert_eq!(fs::read_to_string(a.path("/var/lib/vigo/state")).expect("state"), "a\n");
    assert_eq!(fs::read_to_string(a.path("/etc/vigo/agent.yaml")).expect("conf"), "conf\n");
    assert!(a.path("/srv/x").starts_with(a.root()));
    assert!(a.path("/run/vigo/s").is_dir());
    for missing in ["/var/lib/vigo/state", "/etc/vigo/agent.yaml", "/srv/x"] {
        assert!(!b.path(missing).exists(), "b has no {missing}");
        assert!(!Path::new(missing).exists(), "the machine has no {missing}");
        let out = b.run("test", ["-e", missing]).expect("test");
        assert!(!out.status.success(), "b does not see {missing}");
    }
    assert_eq!(a.path("/usr/bin/env"), Path::new("/usr/bin/env"), "shared paths map to themselves");
}

#[test]
fn users_exist_only_on_their_host() {
    let real_before: Vec<_> =
        ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"].iter().map(|p| fs::read(p).ok()).collect();
    let etc_names = |dir: &str| -> BTreeSet<String> {
        fs::read_dir(dir)
            .expect("list /etc")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let etc_before = etc_names("/etc");

    let fleet = Fleet::new("users").expect("fleet");
    let a = fleet.add_host("a").expect("a");
    let b = fleet.add_host("b").expect("b");
    a.add_user("alice", 2001, 2001).expect("alice on a");

    let entry = a.run_ok("getent", ["passwd", "alice"]).expect("alice on a");
    assert_eq!(entry.trim(), "alice:x:2001:2001::/home/alice:/bin/bash");
    let group = a.run_ok("getent", ["group", "2001"]).expect("group on a");
    assert!(group.starts_with("alice:x:2001:"), "{group}");
    let owner = a.run_ok("stat", ["-c", "%u:%g", "/home/alice"]).expect("stat");
    assert_eq!(owner.trim(), "2001:2001");
    let home = fs::metadata(a.path("/home/alice")).expect("home on the machine side");
    assert_eq!((home.uid(), home.gid()), (2001, 2001));

    let on_b = b.run("getent", ["passwd", "alice"]).expect("getent on b");
    assert_eq!(on_b.status.code(), Some(2), "alice unknown on b");
    let real = Command::new("getent").args(["passwd", "alice"]).output().expect("getent");
    assert_eq!(real.status.code(), Some(2), "alice unknown on the machine");

    let err = a.add_user("alice", 2005, 2005).expect_err("duplicate");
    assert!(matches!(err, Error::Account { .. }), "{err}");
    assert!(err.to_string().contains("alice"), "{err}");

    // The real useradd works inside a host and stays inside it.
    let out = b.run("useradd", ["--no-log-init", "-m", "-u", "2002", "-U", "bob"]).expect("useradd");
    assert!(out.status.success(), "useradd on b: {out:?}");
    assert!(fs::read_to_string(b.path("/etc/passwd")).expect("b passwd").contains("\nbob:x:2002:"));
    assert!(b.path("/home/bob").is_dir());
    assert!(!Path::new("/home/bob").exists());
    let on_a = a.run("id", ["bob"]).expect("id on a");
    assert!(!on_a.status.success(), "bob unknown on a");

    let real_after: Vec<_> =
        ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"].iter().map(|p| fs::read(p).ok()).collect();
    assert!(real_before == real_after, "the machine's account files are untouched");
    assert_eq!(etc_names("/etc"), etc_before, "no lock or backup files left in /etc");
}

#[test]
fn link_down_partitions_and_link_up_restores() {
    let fleet = Fleet::new("partition").expect("fleet");
    let a = fleet.add_host("a").expect("a");
    let b = fleet.add_host("b").expect("b");
    let serve = b.helper(&Helper::TcpServe { addr: b.addr(7100) }).expect("helper");
    let _server = b.spawn_command("tcp-serve", serve).expect("server");
    a.wait_connect(b.addr(7100), WAIT).expect("reachable before the partition");

    b.link_down().expect("down");
    assert!(!a.can_connect(b.addr(7100)).expect("attempt"), "a cannot reach b");
    assert!(
        vigo_testkit::wait_tcp(b.addr(7100), Duration::from_millis(500)).is_err(),
        "the test process cannot reach b either"
    );
    let routes = b.run_ok("ip", ["route"]).expect("routes");
    assert!(routes.contains("default via"), "b keeps its configuration: {routes}");

    b.link_up().expect("up");
    a.wait_connect(b.addr(7100), WAIT).expect("reachable again");
}

#[test]
fn multicast_announcements_cross_the_bridge() {
    let fleet = Fleet::new("multicast").expect("fleet");
    let a = fleet.add_host("a").expect("a");
    let b = fleet.add_host("b").expect("b");
    let route = b.run_ok("ip", ["route", "show", "224.0.0.0/4"]).expect("route");
    assert!(route.contains("dev eth0"), "multicast route: {route}");

    let group = Ipv4Addr::new(224, 0, 0, 44);
    let listen = b.helper(&Helper::UdpListen { group, port: 1533, timeout: WAIT }).expect("helper");
    let mut listener = b.spawn_command("udp-listen", listen).expect("listener");
    vigo_testkit::wait_for("listener to join", WAIT, || helper::reply(&listener.log()) == Some("joined"))
        .expect("joined");
    let send = a
        .helper(&Helper::UdpSend { group, port: 1533, duration: WAIT, payload: "lockbox hello".to_owned() })
        .expect("helper");
    let _sender = a.spawn_command("udp-send", send).expect("sender");
    let status = listener.wait_timeout(WAIT).expect("listener got a datagram");
    assert!(status.success(), "listener: {}", listener.log());
    let replies = helper::replies(&listener.log()).join("|");
    assert_eq!(replies, format!("joined|lockbox hello from {}", a.ip()));
}

#[test]
fn drop_removes_processes_namespaces_bridge_and_files() {
    let fleet = Fleet::new("drop").expect("fleet");
    let bridge = fleet.bridge().to_owned();
    let fleet_root = fleet.root().to_path_buf();
    let host = fleet.add_host("gone").expect("host");
    let netns = host.netns().to_owned();
    let host_root = host.root().to_path_buf();
    // A stray process outside any guard, as a daemonizing binary would leave.
    let mut stray = host.command("sleep", ["600"]).spawn().expect("stray process");
    vigo_testkit::wait_for("stray to enter the host", WAIT, || !host.pids().is_empty()).expect("stray running");
    assert!(netns_exists(&netns) && link_exists(&bridge) && host_root.is_dir());

    drop(host);
    assert!(!netns_exists(&netns), "namespace {netns} deleted");
    assert!(!host_root.exists(), "host files removed");
    let status = stray.wait().expect("stray reaped");
    assert!(!status.success(), "stray killed: {status}");
    assert!(link_exists(&bridge), "the bridge lives while the fleet does");

    drop(fleet);
    assert!(!link_exists(&bridge), "bridge {bridge} deleted");
    assert!(!fleet_root.exists(), "fleet files removed");
}

#[test]
fn drop_cleans_up_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let fleet = Fleet::new("panic").expect("fleet");
        let host = fleet.add_host("doomed").expect("host");
        tx.send((fleet.bridge().to_owned(), host.netns().to_owned())).expect("send names");
        panic!("test failure inside a fleet");
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let (bridge, netns) = rx.recv().expect("names");
    assert!(!netns_exists(&netns), "namespace {netns} deleted on unwind");
    assert!(!link_exists(&bridge), "bridge {bridge} deleted on unwind");
}

#[test]
fn concurrent_fleets_get_distinct_subnets() {
    let fleets: Vec<Fleet> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..4).map(|i| scope.spawn(move || Fleet::new(&format!("concurrent-{i}")).expect("fleet"))).collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let cidrs: BTreeSet<_> = fleets.iter().map(Fleet::cidr).collect();
    let bridges: BTreeSet<_> = fleets.iter().map(|f| f.bridge().to_owned()).collect();
    assert_eq!(cidrs.len(), 4, "{cidrs:?}");
    assert_eq!(bridges.len(), 4, "{bridges:?}");
    for fleet in &fleets {
        assert!(fleet.cidr().starts_with("198.18.") || fleet.cidr().starts_with("198.19."));
        assert!(fleet.bridge().len() <= 15);
    }
}

#[test]
fn bad_names_and_duplicates_are_refused() {
    let fleet = Fleet::new("names-check").expect("fleet");
    let _a = fleet.add_host("a").expect("a");
    let dup = fleet.add_host("a").expect_err("duplicate");
    assert!(matches!(dup, Error::DuplicateHost { .. }), "{dup}");
    let bad = fleet.add_host("Not_Valid").expect_err("invalid");
    assert!(matches!(bad, Error::InvalidHostName { .. }), "{bad}");
    let etc =
        fleet.add_host_with("b", &HostConfig::default().private_dir("/etc/vigo")).expect_err("etc is already private");
    assert!(etc.to_string().contains("/etc/vigo"), "{etc}");
    // Failed adds leave nothing behind: the next host gets the next address.
    let c = fleet.add_host("c").expect("c");
    assert_eq!(c.ip().octets()[3], 3);
}

#[test]
fn failing_commands_name_the_program_and_host() {
    let fleet = Fleet::new("errors").expect("fleet");
    let a = fleet.add_host("web-9").expect("host");
    let err = a.run_ok("sh", ["-c", "echo oops >&2; exit 4"]).expect_err("fails");
    let text = err.to_string();
    assert!(text.starts_with("`sh -c echo oops >&2; exit 4 (on host web-9)` failed"), "{text}");
    assert!(text.ends_with("oops"), "{text}");
}
