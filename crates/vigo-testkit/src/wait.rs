//! Polling helpers: tests wait on conditions (a port that listens, a file that
//! appears), never on fixed sleeps.

use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Polls `probe` until it returns `Some`, backing off from 10 ms to 250 ms
/// between tries; after `timeout` the error names `what`.
pub fn wait_for_some<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout { what: what.to_owned(), after: timeout });
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Polls `condition` until it holds; see [`wait_for_some`].
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> Result<()> {
    wait_for_some(what, timeout, || condition().then_some(()))
}

/// Waits until a TCP connection to `addr` from the calling process succeeds.
/// The test process sits on every fleet's bridge, so host addresses are
/// reachable from it directly.
pub fn wait_tcp(addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_for(&format!("tcp {addr} to accept connections"), timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn returns_the_first_value_found() {
        let mut calls = 0;
        let got = wait_for_some("third call", Duration::from_secs(10), || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        });
        assert_eq!(got.expect("found"), 30);
    }

    #[test]
    fn timeout_names_what_was_awaited() {
        let err = wait_for("the impossible", Duration::from_millis(30), || false).expect_err("never holds");
        assert_eq!(err.to_string(), "timed out after 30ms waiting for the impossible");
    }

    #[test]
    fn tcp_wait_sees_a_listener_and_times_out_without_one() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        wait_tcp(addr, Duration::from_secs(5)).expect("listening");
        drop(listener);
        assert!(wait_tcp(addr, Duration::from_millis(100)).is_err());
    }
}
