//! Small network programs for tests, run by re-executing the test binary
//! itself inside a host, so tests need nothing beyond the base system (no
//! `nc`, `socat` or `python3`).
//!
//! The trick: the test binary gets one extra test that does nothing in a
//! normal run:
//!
//! ```no_run
//! #[test]
//! fn testkit_helper() {
//!     vigo_testkit::helper::run_if_requested();
//! }
//! ```
//!
//! [`crate::Host::helper`] builds a command that runs
//! `current_exe testkit_helper --exact --nocapture` inside the host with the
//! request in the `VIGO_TESTKIT_HELPER` environment variable; that one test
//! then performs the request and exits the process with its status. Results
//! are printed as a line starting with [`REPLY_PREFIX`] (the test harness
//! prints its own lines too); [`reply`] finds it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Name of the test that hosts the helper, at the top level of the test file.
pub const HELPER_TEST: &str = "testkit_helper";
/// Prefix of the line that carries a helper's result.
pub const REPLY_PREFIX: &str = "vigo-testkit-reply: ";
pub(crate) const ENV_VAR: &str = "VIGO_TESTKIT_HELPER";

/// What the helper does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Helper {
    /// Listens on `addr`, replies `ready` once bound, then answers each
    /// connection with the hostname it sees and closes it. Runs until killed.
    TcpServe { addr: SocketAddr },
    /// Connects to `addr` and replies with what the server sent; exits 1 if
    /// it cannot connect within `timeout`.
    TcpProbe { addr: SocketAddr, timeout: Duration },
    /// Joins multicast `group` and replies `<payload> from <sender ip>` for
    /// the first datagram on `port`; exits 1 if none arrives within `timeout`.
    UdpListen { group: Ipv4Addr, port: u16, timeout: Duration },
    /// Sends `payload` to `group:port` every 100 ms for `duration`.
    UdpSend { group: Ipv4Addr, port: u16, duration: Duration, payload: String },
}

impl Helper {
    pub(crate) fn encode(&self) -> String {
        match self {
            Helper::TcpServe { addr } => format!("tcp-serve {addr}"),
            Helper::TcpProbe { addr, timeout } => {
                format!("tcp-probe {addr} {}", timeout.as_millis())
            }
            Helper::UdpListen { group, port, timeout } => format!("udp-listen {group} {port} {}", timeout.as_millis()),
            Helper::UdpSend { group, port, duration, payload } => {
                format!("udp-send {group} {port} {} {payload}", duration.as_millis())
            }
        }
    }

    pub(crate) fn decode(request: &str) -> Result<Helper> {
        let bad = |reason: &str| Error::HelperRequest { request: request.to_owned(), reason: reason.to_owned() };
        let mut words = request.splitn(5, ' ');
        let mut next = |what: &str| words.next().ok_or_else(|| bad(&format!("missing {what}")));
        let millis =
            |text: &str| text.parse().map(Duration::from_millis).map_err(|_| bad("milliseconds must be a number"));
        let addr = |text: &str| text.parse().map_err(|_| bad("expected ip:port"));
        let group = |text: &str| text.parse().map_err(|_| bad("expected an IPv4 group"));
        let port = |text: &str| text.parse().map_err(|_| bad("expected a port"));
        let helper = match next("kind")? {
            "tcp-serve" => Helper::TcpServe { addr: addr(next("address")?)? },
            "tcp-probe" => Helper::TcpProbe { addr: addr(next("address")?)?, timeout: millis(next("timeout")?)? },
            "udp-listen" => Helper::UdpListen {
                group: group(next("group")?)?,
                port: port(next("port")?)?,
                timeout: millis(next("timeout")?)?,
            },
            "udp-send" => Helper::UdpSend {
                group: group(next("group")?)?,
                port: port(next("port")?)?,
                duration: millis(next("duration")?)?,
                payload: next("payload")?.to_owned(),
            },
            _ => return Err(bad("unknown kind")),
        };
        Ok(helper)
    }

    fn run(&self) -> std::io::Result<()> {
        match self {
            Helper::TcpServe { addr } => serve(*addr),
            Helper::TcpProbe { addr, timeout } => {
                let mut stream = TcpStream::connect_timeout(addr, *timeout)?;
                stream.set_read_timeout(Some(*timeout))?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                say(text.trim())
            }
            Helper::UdpListen { group, port, timeout } => {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, *port))?;
                // Unspecified interface: the kernel picks it from the
                // 224.0.0.0/4 route, which is what the route is for.
                socket.join_multicast_v4(group, &Ipv4Addr::UNSPECIFIED)?;
                socket.set_read_timeout(Some(*timeout))?;
                say("joined")?;
                let mut buf = [0u8; 2048];
                let (len, from) = socket.recv_from(&mut buf)?;
                say(&format!("{} from {}", String::from_utf8_lossy(&buf[..len]), from.ip()))
            }
            Helper::UdpSend { group, port, duration, payload } => {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                socket.set_multicast_ttl_v4(1)?;
                let deadline = Instant::now() + *duration;
                let mut sent = 0u32;
                while Instant::now() < deadline {
                    socket.send_to(payload.as_bytes(), (*group, *port))?;
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                say(&format!("sent {sent}"))
            }
        }
    }
}

fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    say("ready")?;
    // A failed accept or a client that hangs up early is the client's
    // business; keep serving.
    for mut stream in listener.incoming().flatten() {
        let _ = stream.write_all(hostname.as_bytes());
    }
    Ok(())
}

fn say(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{REPLY_PREFIX}{text}")?;
    out.flush()
}

/// Arguments that make a libtest binary run exactly the helper test.
pub(crate) fn test_args(test_path: &str) -> [&str; 5] {
    [test_path, "--exact", "--nocapture", "--test-threads", "1"]
}

/// Performs the request in `VIGO_TESTKIT_HELPER` and exits the process; does
/// nothing when the variable is unset (a normal test run).
pub fn run_if_requested() {
    let Ok(request) = std::env::var(ENV_VAR) else {
        return;
    };
    let outcome = Helper::decode(&request)
        .map_err(|err| err.to_string())
        .and_then(|helper| helper.run().map_err(|err| format!("{request}: {err}")));
    let code = match outcome {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("vigo-testkit helper failed: {message}");
            1
        }
    };
    std::process::exit(code);
}

/// The first helper reply in `output` (a helper's stdout or a process log).
pub fn reply(output: &str) -> Option<&str> {
    replies(output).into_iter().next()
}

/// Every helper reply in `output`, in order.
pub fn replies(output: &str) -> Vec<&str> {
    // The harness prints `test testkit_helper ... ` without a newline before
    // the test body runs, so a reply may start mid-line.
    output
        .lines()
        .filter_map(|line| line.find(REPLY_PREFIX).map(|at| &line[at + REPLY_PREFIX.len()..]))
        .map(str::trim_end)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let cases = [
            Helper::TcpServe { addr: "198.18.0.2:7000".parse().expect("addr") },
            Helper::TcpProbe { addr: "198.18.0.3:1".parse().expect("addr"), timeout: Duration::from_millis(1500) },
            Helper::UdpListen { group: Ipv4Addr::new(224, 0, 0, 44), port: 1533, timeout: Duration::from_secs(5) },
            Helper::UdpSend {
                group: Ipv4Addr::new(224, 0, 0, 44),
                port: 1533,
                duration: Duration::from_secs(2),
                payload: "hello with spaces".to_owned(),
            },
        ];
        for helper in cases {
            assert_eq!(Helper::decode(&helper.encode()).expect("decodes"), helper);
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            ("dance", "unknown kind"),
            ("tcp-probe", "missing address"),
            ("tcp-probe 1.2.3.4:5 soon", "milliseconds must be a number"),
            ("udp-listen 224.0.0.44 x 10", "expected a port"),
        ];
        for (request, want) in cases {
            let err = Helper::decode(request).expect_err(request).to_string();
            assert!(err.contains(want), "{request}: {err}");
        }
    }

    #[test]
    fn replies_are_found_among_harness_output() {
        let output =
            "\nrunning 1 test\ntest testkit_helper ... vigo-testkit-reply: ready\nnoise\nvigo-testkit-reply: web-2\n";
        assert_eq!(reply(output), Some("ready"));
        assert_eq!(replies(output), ["ready", "web-2"]);
        assert_eq!(reply("running 1 test\n"), None);
    }
}
