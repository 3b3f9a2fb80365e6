//! `exec`: runs a command when its guards say the work is not done yet.
//!
//! An exec must say how Vigo knows it is done: `creates` (a path that exists
//! afterwards), `unless` (a command that succeeds once done) or `onlyif` (a
//! command that succeeds while work is pending); a handler without guards runs
//! only when notified (`when: "changed"`). Guards run on every check, in no-op
//! mode too, so they must not change the host. Commands run in their own
//! process group, which is killed as a whole on timeout; the last 4 KiB of
//! stdout and stderr are kept for the report.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use vigo_model::catalog::{Common, Lint, Target};
use wait_timeout::ChildExt;

use crate::accounts::{self, User};
use crate::executor::{Applied, Change, Check, Ctx, Drift, ExecError, Executor};
use crate::types::file::AbsPath;

/// Runs a command, guarded.
pub struct Exec;

/// Fields of an `exec` resource.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// The command: a string run by `/bin/sh -c`, or a list run directly as argv (no shell).
    pub command: CommandLine,
    /// A path the command creates: when something exists there, the command does not run.
    pub creates: Option<AbsPath>,
    /// A command that exits 0 when the work is already done: then the command does not run.
    pub unless: Option<CommandLine>,
    /// A command that exits 0 while the work is pending: any other exit means nothing to do.
    pub onlyif: Option<CommandLine>,
    /// Absolute working directory for the command and its guards (default: the agent's).
    pub cwd: Option<AbsPath>,
    /// Extra environment variables for the command and its guards.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Run the command and its guards as this user (a name, or a uid listed in /etc/passwd) with its primary
    /// group from /etc/passwd; `HOME`, `USER` and `LOGNAME` are set for that user.
    pub user: Option<String>,
    /// Seconds before the command (or a guard) is killed together with its whole process group (default 300).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Exit codes that count as success (default `[0]`).
    #[serde(default = "default_returns")]
    pub returns: Vec<i32>,
}

fn default_timeout() -> u64 {
    300
}

fn default_returns() -> Vec<i32> {
    vec![0]
}

impl Executor for Exec {
    type Spec = ExecSpec;

    const NAME: &'static str = "exec";
    const SUMMARY: &'static str = "Runs a command, guarded by creates/unless/onlyif or run only when notified";
    const EXAMPLE: &'static str = r#"- name: Build the search index
  type: exec
  command: /usr/local/bin/build-index --out /var/lib/app/index
  creates: /var/lib/app/index
  user: app
  timeout: 600
- name: Enable IP forwarding
  type: exec
  command: sysctl -w net.ipv4.ip_forward=1
  unless: test "$(sysctl -n net.ipv4.ip_forward)" = 1
- name: Reload systemd units
  type: exec
  command: [systemctl, daemon-reload]
  when: "changed"
"#;

    fn targets(spec: &ExecSpec) -> Vec<Target> {
        let commands = [Some(&spec.command), spec.unless.as_ref(), spec.onlyif.as_ref()];
        let mut targets: Vec<Target> = commands.into_iter().flatten().map(|c| Target::Command(c.to_string())).collect();
        targets.extend(spec.creates.iter().map(|p| Target::Path(p.to_path_buf())));
        targets
    }

    fn lint(spec: &ExecSpec, common: Common<'_>) -> Vec<Lint> {
        let mut lints = Vec::new();
        let guarded = spec.creates.is_some() || spec.unless.is_some() || spec.onlyif.is_some();
        let handler = common.when.is_some_and(vigo_model::when::mentions_changed);
        if !guarded && !handler {
            lints.push(Lint {
                field: None,
                message: format!("exec `{}` has no guard, so it would run on every pass", common.name),
                hint: Some(
                    "add `creates:`, `unless:` or `onlyif:` so Vigo knows when it is done, or `when: \"changed\"` to run it only when notified"
                        .into(),
                ),
            });
        }
        if spec.timeout == 0 {
            lints.push(Lint {
                field: Some("timeout".into()),
                message: "`timeout` must be at least 1 second".into(),
                hint: Some("leave it out for the default of 300 seconds".into()),
            });
        }
        if spec.returns.is_empty() {
            lints.push(Lint {
                field: Some("returns".into()),
                message: "`returns` is empty, so every run would fail".into(),
                hint: Some("leave it out to accept exit code 0, or list the accepted codes".into()),
            });
        }
        if let Some(bad) = spec.env.keys().find(|k| k.is_empty() || k.contains(['=', '\0'])) {
            lints.push(Lint {
                field: Some("env".into()),
                message: format!("environment variable name {bad:?} is empty or contains `=`"),
                hint: Some("use plain names like `LANG`".into()),
            });
        }
        for (field, line) in
            [("command", Some(&spec.command)), ("unless", spec.unless.as_ref()), ("onlyif", spec.onlyif.as_ref())]
        {
            if let Some(line) = line
                && line.has_secret()
            {
                lints.push(Lint {
                    field: Some(field.into()),
                    message: format!(
                        "`{field}` holds a secret reference: a command line is visible to every local user in /proc/<pid>/cmdline"
                    ),
                    hint: Some(
                        "pass the secret through `env` (e.g. `env: {DB_PASSWORD: \"secret:db/pw\"}`) and read it from the environment in the command"
                            .into(),
                    ),
                });
            }
        }
        lints
    }

    fn check(spec: &ExecSpec, _ctx: &Ctx<'_>) -> Result<Check, ExecError> {
        if creates_exists(spec)? {
            return Ok(Check::InSync);
        }
        let runner = Runner::new(spec)?;
        if let Some(unless) = &spec.unless
            && runner.guard(unless)?
        {
            return Ok(Check::InSync);
        }
        if let Some(onlyif) = &spec.onlyif
            && !runner.guard(onlyif)?
        {
            return Ok(Check::InSync);
        }
        Ok(Check::Drift(Drift::one(Change::new("run", None, Some(spec.command.to_string())))))
    }

    fn apply(spec: &ExecSpec, _drift: &Drift, _ctx: &Ctx<'_>) -> Result<Applied, ExecError> {
        let outcome = Runner::new(spec)?.run(&spec.command)?;
        let accepted = outcome.code().is_some_and(|code| spec.returns.contains(&code));
        if !accepted {
            return Err(ExecError::failed(outcome.failure(&spec.command, &spec.returns)));
        }
        Ok(Applied { output: Some(outcome.report()) })
    }

    fn verify(spec: &ExecSpec, _applied: &Applied, _ctx: &Ctx<'_>) -> Result<Check, ExecError> {
        // The guards that say "done" must say so now; an onlyif-only or unguarded
        // exec has nothing more to ask, and its accepted exit code is the proof.
        if creates_exists(spec)? {
            return Ok(Check::InSync);
        }
        let mut unmet = Vec::new();
        if let Some(creates) = &spec.creates {
            unmet.push(Change::set("creates", "missing", creates.to_string()));
        }
        if let Some(unless) = &spec.unless {
            let outcome = Runner::new(spec)?.run(unless)?;
            if outcome.code() == Some(0) {
                return Ok(Check::InSync);
            }
            unmet.push(Change::set("unless", outcome.status_text(), "exit code 0"));
        }
        Ok(Check::from_changes(unmet, None))
    }
}

/// Whether something (even a dangling symlink) exists at `creates`.
fn creates_exists(spec: &ExecSpec) -> Result<bool, ExecError> {
    let Some(path) = &spec.creates else { return Ok(false) };
    match std::fs::symlink_metadata(path.as_path()) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(false),
        Err(e) => Err(ExecError::io(path, e)),
    }
}

/// A command as written: a shell string or an argv list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    Shell(String),
    Argv(Vec<String>),
}

impl CommandLine {
    /// Whether any part of the line is a `secret:` reference (filled in with the value
    /// before the command runs, which would put it on the command line).
    fn has_secret(&self) -> bool {
        match self {
            CommandLine::Shell(text) => vigo_model::secretref::parse_value(text).is_some(),
            CommandLine::Argv(argv) => argv.iter().any(|a| vigo_model::secretref::parse_value(a).is_some()),
        }
    }

    fn command(&self) -> Command {
        match self {
            CommandLine::Shell(text) => {
                let mut cmd = Command::new("/bin/sh");
                cmd.arg("-c").arg(text);
                cmd
            }
            CommandLine::Argv(argv) => {
                // Never empty: the deserializer refuses an empty list.
                let (program, args) = argv.split_first().map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
        }
    }
}

/// The command as a shell would read it (argv elements quoted where needed).
impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandLine::Shell(text) => f.write_str(text),
            CommandLine::Argv(argv) => {
                let quoted: Vec<String> = argv.iter().map(|a| quote(a)).collect();
                f.write_str(&quoted.join(" "))
            }
        }
    }
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain { arg.to_string() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LineVisitor;
        impl<'de> Visitor<'de> for LineVisitor {
            type Value = CommandLine;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a shell command string or a list of arguments")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CommandLine, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("the command is empty"));
                }
                Ok(CommandLine::Shell(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<CommandLine, E> {
                Err(E::custom(format!("YAML read this command as the boolean {v}; put it in quotes, e.g. \"true\"")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CommandLine, E> {
                Err(E::custom(format!("YAML read this command as the number {v}; put it in quotes")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CommandLine, E> {
                Err(E::custom(format!("YAML read this command as the number {v}; put it in quotes")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandLine, A::Error> {
                let mut argv = Vec::new();
                while let Some(Arg(arg)) = seq.next_element()? {
                    argv.push(arg);
                }
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(de::Error::custom("the command list is empty or starts with an empty program name"));
                }
                Ok(CommandLine::Argv(argv))
            }
        }
        d.deserialize_any(LineVisitor)
    }
}

/// One argv element; YAML numbers and booleans (`[sleep, 5]`) are taken as their text.
struct Arg(String);

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ArgVisitor;
        impl Visitor<'_> for ArgVisitor {
            type Value = Arg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command argument (a string)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
        }
        d.deserialize_any(ArgVisitor)
    }
}

impl JsonSchema for CommandLine {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CommandLine".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({ "type": ["string", "array"], "items": { "type": "string" }, "minItems": 1 })
    }
}

/// Bytes of stdout and of stderr kept for reports.
const TAIL: usize = 4096;
/// How long to wait for output after the command exited (a background process may
/// keep the pipes open; its output is then not waited for).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Runs commands the way the spec says: user, directory, environment, timeout.
struct Runner<'a> {
    spec: &'a ExecSpec,
    user: Option<User>,
}

impl<'a> Runner<'a> {
    fn new(spec: &'a ExecSpec) -> Result<Self, ExecError> {
        let user = match &spec.user {
            None => None,
            Some(name) => {
                Some(accounts::lookup_user(name).map_err(|e| ExecError::failed(e.to_string()))?.ok_or_else(|| {
                    ExecError::failed(format!("user `{name}` does not exist in {}", accounts::PASSWD))
                })?)
            }
        };
        Ok(Self { spec, user })
    }

    /// Runs a guard: true when it exits 0. A guard that cannot start or times out is an error.
    fn guard(&self, line: &CommandLine) -> Result<bool, ExecError> {
        Ok(self.run(line)?.code() == Some(0))
    }

    fn run(&self, line: &CommandLine) -> Result<Outcome, ExecError> {
        if self.spec.timeout == 0 {
            return Err(ExecError::failed(format!("command `{line}`: timeout must be at least 1 second")));
        }
        let mut cmd = line.command();
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group, so a timeout kills everything it started.
        cmd.process_group(0);
        if let Some(user) = &self.user {
            cmd.uid(user.uid).gid(user.gid);
            cmd.env("HOME", &user.home).env("USER", &user.name).env("LOGNAME", &user.name);
        }
        if let Some(cwd) = &self.spec.cwd {
            cmd.current_dir(cwd.as_path());
        }
        cmd.envs(&self.spec.env);
        let mut child = cmd.spawn().map_err(|e| ExecError::failed(format!("command `{line}`: cannot start: {e}")))?;
        let (done_tx, done_rx) = mpsc::channel();
        let stdout = child.stdout.take().map(|out| capture(out, done_tx.clone()));
        let stderr = child.stderr.take().map(|err| capture(err, done_tx.clone()));
        drop(done_tx);
        let status = match child.wait_timeout(Duration::from_secs(self.spec.timeout)) {
            Ok(Some(status)) => Some(status),
            Ok(None) => {
                kill_group(child.id());
                let _ = child.wait();
                None
            }
            Err(e) => {
                kill_group(child.id());
                let _ = child.wait();
                return Err(ExecError::failed(format!("command `{line}`: waiting for it failed: {e}")));
            }
        };
        // Every reader reports once when its pipe closes; the channel closes when both have.
        let deadline = std::time::Instant::now() + DRAIN_GRACE;
        while let Ok(()) = done_rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {}
        let outcome = Outcome {
            status,
            stdout: stdout.map(|t| t.text()).unwrap_or_default(),
            stderr: stderr.map(|t| t.text()).unwrap_or_default(),
        };
        if outcome.status.is_none() {
            return Err(ExecError::failed(format!(
                "command `{line}` timed out after {}s; its process group was killed{}",
                self.spec.timeout,
                outcome.stderr_suffix()
            )));
        }
        Ok(outcome)
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // The group may already be gone; there is nothing else to do either way.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// The last bytes a reader thread saw on one pipe.
#[derive(Clone)]
struct Tail(Arc<Mutex<(Vec<u8>, u64)>>);

impl Tail {
    fn text(&self) -> String {
        let guard = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (bytes, total) = &*guard;
        let start = bytes.len().saturating_sub(TAIL);
        let text = String::from_utf8_lossy(&bytes[start..]).trim_end().to_string();
        if *total > TAIL as u64 { format!("[… last {TAIL} of {total} bytes]\n{text}") } else { text }
    }
}

/// Reads `pipe` to its end on a thread of its own, keeping the tail; reports on `done`.
fn capture(mut pipe: impl Read + Send + 'static, done: mpsc::Sender<()>) -> Tail {
    let tail = Tail(Arc::new(Mutex::new((Vec::new(), 0))));
    let shared = tail.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let mut guard = shared.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let (bytes, total) = &mut *guard;
                    bytes.extend_from_slice(&chunk[..n]);
                    *total += n as u64;
                    if bytes.len() > 2 * TAIL {
                        let excess = bytes.len() - TAIL;
                        bytes.drain(..excess);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
    tail
}

/// How a command ended and the tails of its output.
struct Outcome {
    /// `None` when it was killed for running too long.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    fn status_text(&self) -> String {
        match (self.code(), self.status.and_then(|s| s.signal())) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "timed out".into(),
        }
    }

    /// The report for a successful run: exit code and output tails.
    fn report(&self) -> String {
        let mut out = self.status_text();
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if !text.is_empty() {
                out += &format!("\n--- {name} ---\n{text}");
            }
        }
        out
    }

    fn stderr_suffix(&self) -> String {
        let (name, text) = if self.stderr.is_empty() { ("stdout", &self.stdout) } else { ("stderr", &self.stderr) };
        if text.is_empty() { String::new() } else { format!("; {name}: {text}") }
    }

    fn failure(&self, line: &CommandLine, returns: &[i32]) -> String {
        let accepted: Vec<String> = returns.iter().map(i32::to_string).collect();
        format!(
            "command `{line}` failed with {} (accepted: {}){}",
            self.status_text(),
            accepted.join(", "),
            self.stderr_suffix()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{World, attributes, converge, spec};
    use crate::executor::Mode;
    use crate::types::file::tests::snapshot;
    use std::path::Path;

    fn check(spec: &ExecSpec) -> Check {
        Exec::check(spec, &World::default().ctx(Mode::NoOp)).expect("check")
    }

    fn run(spec: &ExecSpec) -> Result<Applied, ExecError> {
        let world = World::default();
        let Check::Drift(drift) = Exec::check(spec, &world.ctx(Mode::Enforce)).expect("check") else {
            panic!("expected the command to be due")
        };
        Exec::apply(spec, &drift, &world.ctx(Mode::Enforce))
    }

    #[test]
    fn conformance() {
        // (initial marker present?, guard yaml, expected attributes)
        let table: &[(bool, &str, &[&str])] = &[
            (false, "creates: {m}", &["run"]),
            (true, "creates: {m}", &[]),
            (false, "unless: test -e {m}", &["run"]),
            (true, "unless: test -e {m}", &[]),
            (false, "onlyif: test ! -e {m}", &["run"]),
            (true, "onlyif: test ! -e {m}", &[]),
            (false, "unless: [test, -e, {m}]", &["run"]),
        ];
        for (present, guard, expected) in table {
            let tmp = tempfile::tempdir().expect("tempdir");
            let marker = tmp.path().join("marker");
            if *present {
                std::fs::write(&marker, "before").expect("marker");
            }
            let guard = guard.replace("{m}", &marker.display().to_string());
            let yaml = format!("command: echo ran > {}\n{guard}", marker.display());
            let drift = converge::<Exec>(&World::default(), &spec::<Exec>(&yaml), || snapshot(tmp.path()));
            assert_eq!(attributes(&drift), *expected, "{guard} (marker present: {present})");
            let content = std::fs::read_to_string(&marker).expect("marker");
            assert_eq!(content, if *present { "before" } else { "ran\n" }, "{guard}");
        }
    }

    #[test]
    fn drift_names_the_command() {
        let spec = spec::<Exec>("command: [printf, \"%s|\", a b, 5]\ncreates: /nonexistent/vigo-marker");
        let Check::Drift(drift) = check(&spec) else { panic!("due") };
        assert_eq!(drift.changes, vec![Change::new("run", None, Some("printf '%s|' 'a b' 5".into()))]);
        let applied = run(&spec).expect("apply");
        assert_eq!(applied.output.as_deref(), Some("exit code 0\n--- stdout ---\na b|5|"));
    }

    #[test]
    fn unguarded_handler_runs_and_its_exit_is_the_verification() {
        let spec = spec::<Exec>("command: echo handled");
        let applied = run(&spec).expect("apply");
        assert!(applied.output.as_deref().is_some_and(|o| o.contains("handled")));
        let verified = Exec::verify(&spec, &applied, &World::default().ctx(Mode::Enforce)).expect("verify");
        assert_eq!(verified, Check::InSync);
    }

    #[test]
    fn verify_reports_a_guard_the_command_did_not_satisfy() {
        let world = World::default();
        let missing = spec::<Exec>("command: \"true\"\ncreates: /nonexistent/vigo-never");
        let applied = run(&missing).expect("apply");
        let Check::Drift(drift) = Exec::verify(&missing, &applied, &world.ctx(Mode::Enforce)).expect("verify") else {
            panic!("creates is still missing")
        };
        assert_eq!(attributes(&Some(drift)), ["creates"]);
        let unmet = spec::<Exec>("command: \"true\"\nunless: exit 3");
        let Check::Drift(drift) = Exec::verify(&unmet, &applied, &world.ctx(Mode::Enforce)).expect("verify") else {
            panic!("unless still fails")
        };
        assert_eq!(drift.changes, vec![Change::set("unless", "exit code 3", "exit code 0")]);
    }

    #[test]
    fn returns_and_failure_messages() {
        let accepted = spec::<Exec>("command: exit 3\nreturns: [0, 3]");
        assert_eq!(run(&accepted).expect("3 is accepted").output.as_deref(), Some("exit code 3"));
        let failing = spec::<Exec>("command: echo boom >&2; exit 7");
        let err = run(&failing).expect_err("exit 7").to_string();
        assert!(err.contains("exit code 7") && err.contains("boom") && err.contains("echo boom"), "{err}");
        let missing = spec::<Exec>("command: [/nonexistent/vigo-tool, --flag]");
        let err = run(&missing).expect_err("cannot start").to_string();
        assert!(err.contains("/nonexistent/vigo-tool") && err.contains("cannot start"), "{err}");
    }

    #[test]
    fn output_keeps_only_the_tail() {
        let spec = spec::<Exec>("command: \"head -c 20000 /dev/zero | tr '\\\\0' a; echo; echo END\"");
        let output = run(&spec).expect("apply").output.expect("output");
        assert!(output.ends_with("END"), "{output}");
        assert!(output.contains("last 4096 of 20005 bytes"), "{}", &output[..200]);
        assert!(output.len() < TAIL + 200, "{}", output.len());
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pidfile = tmp.path().join("pid");
        let yaml = format!("command: sleep 60 & echo $! > {}; wait\ntimeout: 1", pidfile.display());
        let err = run(&spec::<Exec>(&yaml)).expect_err("timeout").to_string();
        assert!(err.contains("timed out after 1s"), "{err}");
        let pid = std::fs::read_to_string(&pidfile).expect("pid").trim().to_string();
        // Gone, or a zombie waiting for a reaper: either way no longer running. SIGKILL
        // lands asynchronously, so give an exiting process a moment to finish dying.
        let running = || {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            state.rsplit(") ").next().is_some_and(|rest| !rest.is_empty() && !rest.starts_with('Z')).then_some(state)
        };
        let mut survivor = running();
        for _ in 0..50 {
            if survivor.is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            survivor = running();
        }
        assert_eq!(survivor, None, "background sleep survived");
    }

    #[test]
    fn runs_as_user_with_env_and_cwd() {
        let as_nobody = spec::<Exec>("command: [id, -u]\nuser: nobody");
        assert_eq!(run(&as_nobody).expect("apply").output.as_deref(), Some("exit code 0\n--- stdout ---\n65534"));
        let home = spec::<Exec>("command: echo \"$HOME $USER\"\nuser: root\nenv: { USER: override }");
        let output = run(&home).expect("apply").output.expect("output");
        assert!(output.ends_with("/root override"), "{output}");
        let tmp = tempfile::tempdir().expect("tempdir");
        let yaml = format!(
            "command: echo \"$GREETING\" > here\ncwd: {dir}\nenv:\n  GREETING: hello there\ncreates: {dir}/here",
            dir = tmp.path().display()
        );
        converge::<Exec>(&World::default(), &spec::<Exec>(&yaml), || snapshot(tmp.path())).expect("drift");
        assert_eq!(std::fs::read_to_string(tmp.path().join("here")).expect("here"), "hello there\n");
        let unknown = spec::<Exec>("command: \"true\"\nuser: no-such-user-vigo");
        let err = Exec::apply(&unknown, &Drift::default(), &World::default().ctx(Mode::Enforce)).expect_err("user");
        assert!(err.to_string().contains("user `no-such-user-vigo` does not exist"), "{err}");
    }

    #[test]
    fn guards_run_with_the_same_user() {
        let spec = spec::<Exec>("command: \"true\"\nuser: nobody\nunless: test \"$(id -u)\" = 65534");
        assert_eq!(check(&spec), Check::InSync);
    }

    #[test]
    fn lints() {
        let bare = spec::<Exec>("command: make install");
        let lint = |when: Option<&str>| Exec::lint(&bare, Common { name: "Install", when });
        let found = lint(None);
        assert_eq!(found.len(), 1);
        assert!(found[0].hint.as_deref().is_some_and(|h| h.contains("creates:") && h.contains("when: \"changed\"")));
        assert!(lint(Some("changed")).is_empty());
        assert!(lint(Some("changed && os_family('debian')")).is_empty());
        assert_eq!(lint(Some("os_family('debian')")).len(), 1);
        assert!(
            Exec::lint(&spec::<Exec>("command: x\nonlyif: test -e /x"), Common { name: "x", when: None }).is_empty()
        );
        let odd = spec::<Exec>("command: x\ncreates: /x\ntimeout: 0\nreturns: []\nenv: { \"A=B\": c }");
        let fields: Vec<Option<String>> =
            Exec::lint(&odd, Common { name: "x", when: None }).into_iter().map(|l| l.field).collect();
        assert_eq!(fields, [Some("timeout".into()), Some("returns".into()), Some("env".into())]);
    }

    #[test]
    fn a_secret_on_a_command_line_is_refused_and_one_in_env_is_not() {
        let common = Common { name: "x", when: None };
        for (yaml, field) in [
            ("command: [mysql, -u, app, \"secret:db/pw\"]\ncreates: /x", "command"),
            ("command: \"secret:db/script\"\ncreates: /x", "command"),
            ("command: \"true\"\nunless: [check, \"secret:db/pw\"]", "unless"),
            ("command: \"true\"\nonlyif: [check, \"secret:db/pw\"]", "onlyif"),
        ] {
            let lints = Exec::lint(&spec::<Exec>(yaml), common);
            assert_eq!(lints.len(), 1, "{yaml}: {lints:?}");
            assert_eq!(lints[0].field.as_deref(), Some(field), "{yaml}");
            assert!(lints[0].message.contains("/proc/<pid>/cmdline"), "{}", lints[0].message);
            assert!(lints[0].hint.as_deref().is_some_and(|h| h.contains("`env`")), "{yaml}");
        }
        let through_env = spec::<Exec>("command: [mysql, -u, app]\ncreates: /x\nenv: {MYSQL_PWD: \"secret:db/pw\"}");
        assert!(Exec::lint(&through_env, common).is_empty());
        let literal = spec::<Exec>("command: grep -q secret:x /etc/app.conf\ncreates: /x");
        assert!(Exec::lint(&literal, common).is_empty(), "text that merely mentions `secret:` is not a reference");
    }

    #[test]
    fn schema_fields_have_kinds_and_docs() {
        let fields = crate::registry::fields_of(&schemars::schema_for!(ExecSpec).to_value());
        let kind = |name: &str| fields.iter().find(|f| f.name == name).map(|f| (f.kind.as_str(), f.required));
        assert_eq!(kind("command"), Some(("string|array", true)));
        assert_eq!(kind("unless"), Some(("string|array", false)));
        assert_eq!(kind("creates"), Some(("string", false)));
        assert_eq!(kind("timeout"), Some(("integer", false)));
        assert!(fields.iter().all(|f| !f.doc.is_empty()), "{fields:?}");
    }

    #[test]
    fn targets_and_parsing() {
        let spec = spec::<Exec>("command: [rm, -rf, /srv/old dir]\nunless: test -e /x\ncreates: /srv/done");
        assert_eq!(
            Exec::targets(&spec),
            [
                Target::Command("rm -rf '/srv/old dir'".into()),
                Target::Command("test -e /x".into()),
                Target::Path(Path::new("/srv/done").to_path_buf())
            ]
        );
        let parse = |yaml: &str| -> Result<ExecSpec, String> {
            let value: serde_json::Value = serde_saphyr::from_str(yaml).expect("yaml");
            crate::executor::parse_spec(&value).map_err(|e| e.message)
        };
        assert!(parse("command: []").expect_err("empty").contains("empty"));
        assert!(parse("command: \"  \"").expect_err("blank").contains("empty"));
        assert!(parse("command: x\ncwd: relative").expect_err("cwd").contains("absolute"));
        assert!(parse("command: x\nshell: bash").is_err());
        assert!(parse("command: x\nunless: true").expect_err("bool").contains("quotes"));
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
