//! The machine underneath: which system tools exist (and which Debian package
//! brings each), running them with readable errors, and small process facts.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Absolute paths of the tools the testkit drives. Resolved once, so a test
/// environment with `/usr/sbin` missing from `PATH` still works.
#[derive(Debug)]
pub(crate) struct Tools {
    pub ip: PathBuf,
    pub unshare: PathBuf,
    pub mount: PathBuf,
    pub hostname: PathBuf,
    pub cp: PathBuf,
    pub sh: PathBuf,
    pub bash: PathBuf,
    pub timeout: PathBuf,
}

/// Tool name and the Debian 12 package that ships it.
const REQUIRED: [(&str, &str); 8] = [
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("mount", "mount"),
    ("hostname", "hostname"),
    ("cp", "coreutils"),
    ("sh", "dash"),
    ("bash", "bash"),
    ("timeout", "coreutils"),
];

/// Searched after `PATH`: cargo and nextest sometimes run tests with a `PATH`
/// that lacks the sbin directories where `ip` lives.
const FALLBACK_DIRS: [&str; 6] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Checks that we are root and every tool is installed; the first problem found
/// is the error, naming the package to install.
pub(crate) fn tools() -> Result<&'static Tools> {
    static TOOLS: OnceLock<std::result::Result<Tools, (&'static str, &'static str)>> = OnceLock::new();
    let uid = nix::unistd::geteuid().as_raw();
    if uid != 0 {
        return Err(Error::NotRoot { uid });
    }
    let found = TOOLS.get_or_init(|| {
        let mut paths = Vec::with_capacity(REQUIRED.len());
        for (tool, package) in REQUIRED {
            paths.push(find_tool(tool).ok_or((tool, package))?);
        }
        let mut it = paths.into_iter();
        let mut next = || it.next().expect("one path per entry of REQUIRED");
        Ok(Tools {
            ip: next(),
            unshare: next(),
            mount: next(),
            hostname: next(),
            cp: next(),
            sh: next(),
            bash: next(),
            timeout: next(),
        })
    });
    found.as_ref().map_err(|&(tool, package)| Error::MissingTool { tool, package })
}

/// Finds an executable file named `name` in `PATH`, then in the system directories.
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Marks the argument after which a host command's own program starts; see
/// [`crate::Host::command`].
pub(crate) const HOST_MARK: &str = "vigo-testkit:";

/// `program arg arg…` for error messages. For a command run inside a host,
/// only the program the test asked for and the host's name, not the
/// namespace plumbing around it.
pub(crate) fn describe(cmd: &Command) -> String {
    let args: Vec<_> = cmd.get_args().map(OsStr::to_string_lossy).collect();
    let host = args.iter().position(|arg| arg.starts_with(HOST_MARK)).filter(|&at| at + 1 < args.len());
    if let Some(at) = host {
        let name = &args[at][HOST_MARK.len()..];
        return format!("{} (on host {name})", args[at + 1..].join(" "));
    }
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in args {
        text.push(' ');
        text.push_str(&arg);
    }
    text
}

/// Runs a short administrative command to completion; a non-zero exit is an
/// error carrying its stderr. Returns stdout.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    cmd.stdin(Stdio::null());
    let output = cmd.output().map_err(|source| Error::Spawn { command: describe(cmd), source })?;
    check_output(cmd, output)
}

/// Turns a finished command's output into its stdout, or an error when it failed.
pub(crate) fn check_output(cmd: &Command, output: Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    Err(Error::CommandFailed {
        command: describe(cmd),
        status: output.status.to_string(),
        stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs `ip ARGS…`.
pub(crate) fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<String> {
    let mut cmd = Command::new(&tools()?.ip);
    cmd.args(args);
    run(&mut cmd)
}

/// Runs `ip ARGS…` during teardown: failures are expected when a previous step
/// already removed the object, so they are ignored.
pub(crate) fn ip_quiet<S: AsRef<OsStr>>(args: &[S]) {
    if let Ok(tools) = tools() {
        let _ = Command::new(&tools.ip)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Quotes a byte string for `sh` so it reaches the program as one argument,
/// whatever bytes it holds.
pub(crate) fn sh_quote(raw: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(raw.len() + 2);
    out.push(b'\'');
    for &byte in raw.as_bytes() {
        if byte == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(byte);
        }
    }
    out.push(b'\'');
    OsString::from_vec(out)
}

/// Replaces `path` with a new file holding `contents`: written beside it and
/// renamed over it, so a symlink at `path` (copied from the machine's `/etc`)
/// is replaced rather than followed out of the host's tree. A regular file
/// keeps its mode and owner (`shadow` stays `0640 root:shadow`); anything
/// else becomes `0644 root:root`.
pub(crate) fn replace_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (mode, uid, gid) = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        _ => (0o644, 0, 0),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".vigo-testkit-new");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file| std::io::Write::write_all(&mut file, contents.as_ref()))
        .and_then(|()| std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)))
        .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)))
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| Error::io("write", path, source))
}

/// `bytes` random bytes as lowercase hex, from the kernel's generator.
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let path = "/dev/urandom";
    let mut buf = vec![0u8; bytes];
    fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut buf))
        .map_err(|source| Error::io("read", path, source))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Start time (clock ticks after boot) of a live process, which together with
/// its pid names it uniquely: a reused pid gets a different start time.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses, so count
    // fields from the last ')'; start time is field 22, the 20th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Pids of the processes whose network namespace is the named one.
pub(crate) fn netns_pids(netns: &str) -> Vec<u32> {
    ip(&["netns", "pids", netns])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILLs every process in a network namespace and waits (briefly) until
/// none is left, so the namespace can really go away.
pub(crate) fn kill_netns_processes(netns: &str) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let pids = netns_pids(netns);
        if pids.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        for pid in pids {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        let quoted = sh_quote(OsStr::new("it's a /path"));
        assert_eq!(quoted, OsString::from("'it'\\''s a /path'"));
        let out = Command::new("sh")
            .arg("-c")
            .arg(OsString::from_iter([OsString::from("printf %s "), quoted]))
            .output()
            .expect("sh runs");
        assert_eq!(out.stdout, b"it's a /path");
    }

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat = "4242 (we ird) name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("garbage"), None);
        let own = process_start_time(std::process::id());
        assert!(own.is_some_and(|t| t > 0), "own start time: {own:?}");
    }

    #[test]
    fn tool_lookup_finds_sh_and_misses_nonsense() {
        assert!(find_tool("sh").is_some());
        assert_eq!(find_tool("vigo-testkit-no-such-tool"), None);
    }

    #[test]
    fn replace_file_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let outside = dir.path().join("outside");
        fs::write(&outside, "keep").expect("write");
        let link = dir.path().join("hosts");
        std::os::unix::fs::symlink(&outside, &link).expect("symlink");
        replace_file(&link, "new\n").expect("replaced");
        assert_eq!(fs::read_to_string(&outside).expect("read"), "keep");
        assert_eq!(fs::read_to_string(&link).expect("read"), "new\n");
        assert!(!fs::symlink_metadata(&link).expect("meta").file_type().is_symlink());

        let secret = dir.path().join("shadow");
        fs::write(&secret, "old").expect("write");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).expect("chmod");
        replace_file(&secret, "new").expect("replaced");
        let mode = fs::metadata(&secret).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640, "a regular file keeps its mode");
    }

    #[test]
    fn random_hex_has_the_asked_length_and_varies() {
        let a = random_hex(16).expect("urandom readable");
        let b = random_hex(16).expect("urandom readable");
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
