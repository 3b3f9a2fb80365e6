//! Processes started in hosts: a guard that kills the whole process group when
//! dropped (also when the test panics), and running a command to completion
//! with a timeout.
//!
//! Every command built by [`crate::Host::command`] starts its own process group,
//! so the guard reaches the program's children too. A daemon that calls
//! `setsid` leaves the group; [`crate::Host`]'s drop still kills it, because it
//! kills everything in the host's network namespace.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use wait_timeout::ChildExt;

use crate::error::{Error, Result};
use crate::sys::describe;

/// How long [`Process::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How much of a log a panicking test prints for each process it drops.
const LOG_TAIL_BYTES: u64 = 8 * 1024;

/// A running program; dropping it SIGKILLs its process group and reaps it.
///
/// Output goes to a log file (see [`Process::log`]); when a test panics, the
/// drop prints the tail of every log, so a failing test shows what the
/// daemons said.
#[derive(Debug)]
pub struct Process {
    child: Child,
    label: String,
    log: Option<PathBuf>,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `cmd` in its own process group with stdin closed and stdout and
    /// stderr appended to `log`.
    pub(crate) fn spawn(mut cmd: Command, label: &str, log: &Path) -> Result<Process> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| Error::io("create log file", log, source))?;
        let err_file = file.try_clone().map_err(|source| Error::io("reopen log file", log, source))?;
        cmd.stdin(Stdio::null()).stdout(file).stderr(err_file);
        let child = spawn_in_group(&mut cmd)?;
        Ok(Process { child, label: label.to_owned(), log: Some(log.to_path_buf()), status: None })
    }

    /// Guards a child spawned elsewhere (for example with piped stdio). Only
    /// its process group is killed on drop if it was spawned with
    /// `process_group(0)`, as [`crate::Host::command`] does.
    pub fn adopt(child: Child, label: &str) -> Process {
        Process { child, label: label.to_owned(), log: None, status: None }
    }

    /// Pid of the program (it is also its process group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The label given at spawn, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Where stdout and stderr go, when the testkit set them up.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Everything the program wrote so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|path| fs::read(path).ok())
            .map(|raw| String::from_utf8_lossy(&raw).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if the program has finished, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(|source| self.wait_error(source))?;
        }
        Ok(self.status)
    }

    /// Waits for the program to exit on its own, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        match self.child.wait_timeout(timeout).map_err(|source| self.wait_error(source))? {
            Some(status) => {
                self.status = Some(status);
                Ok(status)
            }
            None => Err(Error::Timeout { what: format!("{} to exit", self.label), after: timeout }),
        }
    }

    /// SIGTERM to the group, then SIGKILL if it is still running after a grace
    /// period; returns the exit status.
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.signal(Signal::SIGTERM);
        if let Ok(status) = self.wait_timeout(STOP_GRACE) {
            return Ok(status);
        }
        self.kill_and_reap()
    }

    /// SIGKILL to the group; returns the exit status.
    pub fn kill(mut self) -> Result<ExitStatus> {
        self.kill_and_reap()
    }

    fn kill_and_reap(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        self.signal(Signal::SIGKILL);
        let status = self.child.wait().map_err(|source| self.wait_error(source))?;
        self.status = Some(status);
        Ok(status)
    }

    fn signal(&self, signal: Signal) {
        // Only while unreaped: then the pid, and so the group id, cannot have
        // been handed to another process.
        if self.status.is_none()
            && let Ok(pid) = i32::try_from(self.child.id())
        {
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }

    fn wait_error(&self, source: std::io::Error) -> Error {
        Error::Spawn { command: format!("wait for {}", self.label), source }
    }

    fn log_tail(&self) -> Option<String> {
        let path = self.log.as_ref()?;
        let mut file = fs::File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        let skip = len.saturating_sub(LOG_TAIL_BYTES);
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(skip)).ok()?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).ok()?;
        Some(String::from_utf8_lossy(&raw).into_owned())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if thread::panicking()
            && let Some(tail) = self.log_tail()
        {
            eprintln!(
                "---- log of {} (last {LOG_TAIL_BYTES} bytes) ----\n{tail}\n---- end of {} ----",
                self.label, self.label
            );
        }
        let _ = self.kill_and_reap();
    }
}

/// Spawns with its own process group, so a kill reaches its children too.
pub(crate) fn spawn_in_group(cmd: &mut Command) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    cmd.spawn().map_err(|source| Error::Spawn { command: describe(cmd), source })
}

/// Runs `cmd` to completion with stdin closed, capturing its output. After
/// `timeout` the process group is killed and the error holds what it printed.
pub(crate) fn output(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn_in_group(cmd)?;
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let waited = child.wait_timeout(timeout);
    let timed_out = matches!(waited, Ok(None));
    let status = match waited {
        Ok(Some(status)) => Ok(status),
        Ok(None) | Err(_) => {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            child.wait()
        }
    };
    let stdout = stdout.map(join).unwrap_or_default();
    let stderr = stderr.map(join).unwrap_or_default();
    let status = status.map_err(|source| Error::Spawn { command: describe(cmd), source })?;
    if timed_out {
        return Err(Error::CommandTimedOut {
            command: describe(cmd),
            after: timeout,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        });
    }
    Ok(Output { status, stdout, stderr })
}

fn drain<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn join(handle: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    handle.join().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn output_captures_both_streams_and_the_status() {
        let out = output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), Duration::from_secs(30))
            .expect("runs");
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn output_kills_the_whole_group_on_timeout() {
        let started = Instant::now();
        // The background sleep keeps stdout open: only a group kill ends it.
        let err =
            output(Command::new("sh").args(["-c", "echo early; sleep 60 & sleep 60"]), Duration::from_millis(300))
                .expect_err("times out");
        assert!(started.elapsed() < Duration::from_secs(30));
        match err {
            Error::CommandTimedOut { stdout, .. } => assert_eq!(stdout, "early\n"),
            other => panic!("unexpected error: {other}"),
        }
    }

    #[test]
    fn dropping_a_process_kills_its_children() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("p.log");
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 600 & echo $! > {}; echo started; wait", pidfile.display());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        let process = Process::spawn(cmd, "sleeper", &log).expect("spawned");
        crate::wait::wait_for("child pid file", Duration::from_secs(10), || {
            fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
        })
        .expect("child started");
        let child: i32 = fs::read_to_string(&pidfile).expect("pid file").trim().parse().expect("pid");
        crate::wait::wait_for("log line", Duration::from_secs(10), || process.log() == "started\n")
            .expect("log written");
        drop(process);
        // The orphaned sleep is reparented and reaped by init; give it a moment.
        crate::wait::wait_for("grandchild to die", Duration::from_secs(10), || {
            fs::read_to_string(format!("/proc/{child}/stat")).map_or(true, |stat| stat.contains(") Z "))
        })
        .expect("grandchild killed with the group");
    }

    #[test]
    fn stop_reports_the_signal_and_wait_timeout_expires() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let mut process = Process::spawn(cmd, "sleep", &dir.path().join("s.log")).expect("spawned");
        assert!(process.try_wait().expect("try_wait").is_none());
        let err = process.wait_timeout(Duration::from_millis(50)).expect_err("still running");
        assert!(err.to_string().contains("sleep to exit"), "{err}");
        let status = process.stop().expect("stopped");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc_sigterm()));
    }

    fn libc_sigterm() -> i32 {
        Signal::SIGTERM as i32
    }
}
