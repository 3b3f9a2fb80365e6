//! Self-protection guardrails: no resource may manage Vigo itself.
//!
//! These checks are not configurable. A resource that manages the agent or
//! server binaries, the configuration or state directories, or the Vigo service
//! units could cut the fleet off from its own management.

use std::path::{Component, Path, PathBuf};

use crate::catalog::Target;

/// Paths no resource may manage (or manage anything below).
pub const PROTECTED_PATHS: &[&str] = &[
    "/etc/vigo",
    "/var/lib/vigo",
    "/usr/bin/vigo",
    "/usr/bin/vigosrv",
    "/usr/bin/vigocli",
    "/usr/sbin/vigo",
    "/usr/sbin/vigosrv",
    "/usr/local/bin/vigo",
    "/usr/local/bin/vigosrv",
    "/usr/local/bin/vigocli",
    "/usr/local/sbin/vigo",
    "/usr/local/sbin/vigosrv",
    "/etc/systemd/system/vigo.service",
    "/etc/systemd/system/vigosrv.service",
    "/etc/systemd/system/vigo.service.d",
    "/etc/systemd/system/vigosrv.service.d",
    "/lib/systemd/system/vigo.service",
    "/lib/systemd/system/vigosrv.service",
    "/usr/lib/systemd/system/vigo.service",
    "/usr/lib/systemd/system/vigosrv.service",
];

/// Service units no resource may manage.
pub const PROTECTED_SERVICES: &[&str] = &["vigo", "vigosrv"];

/// Why a target is refused, or `None` when it is allowed.
pub fn refuse(target: &Target) -> Option<String> {
    match target {
        Target::Path(p) => refuse_path(p),
        Target::Service(s) => refuse_service(s),
        Target::Command(c) => refuse_command(c),
    }
}

fn refuse_path(path: &Path) -> Option<String> {
    let path = normalize(path);
    PROTECTED_PATHS.iter().map(Path::new).find(|p| path.starts_with(p)).map(|p| {
        format!("`{}` is part of Vigo itself (`{}`); resources may not manage it", path.display(), p.display())
    })
}

fn refuse_service(name: &str) -> Option<String> {
    let unit = name.trim().strip_suffix(".service").unwrap_or(name.trim());
    PROTECTED_SERVICES.contains(&unit).then(|| format!("service `{name}` is Vigo itself; resources may not manage it"))
}

/// Commands are free text; refuse the plain ways of stopping Vigo or deleting its files.
fn refuse_command(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split(|c: char| c.is_whitespace() || c == ';' || c == '&' || c == '|').collect();
    for p in PROTECTED_PATHS {
        if words.iter().any(|w| w.trim_matches(['"', '\'']).starts_with(p)) {
            return Some(format!("command touches `{p}`, which is part of Vigo itself"));
        }
    }
    let stops = ["stop", "disable", "mask", "kill", "restart"];
    for pair in words.windows(3) {
        let manages = matches!(pair[0], "systemctl" | "service") || pair[0].ends_with("/systemctl");
        if manages && (stops.contains(&pair[1]) || stops.contains(&pair[2])) {
            for w in &pair[1..] {
                if refuse_service(w).is_some() {
                    return Some(format!("command `{command}` stops Vigo itself"));
                }
            }
        }
    }
    None
}

/// Lexically resolves `.`, `..` and repeated separators (symlinks are the executors' concern).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_targets_are_refused() {
        let refused = [
            Target::Path("/etc/vigo/agent.yaml".into()),
            Target::Path("/etc/vigo".into()),
            Target::Path("/etc/./nginx/../vigo/x".into()),
            Target::Path("/var/lib/vigo/keys/envoy.key".into()),
            Target::Path("/usr/bin/vigo".into()),
            Target::Path("/etc/systemd/system/vigo.service".into()),
            Target::Service("vigo".into()),
            Target::Service("vigosrv.service".into()),
            Target::Command("rm -rf /var/lib/vigo".into()),
            Target::Command("systemctl stop vigo".into()),
            Target::Command("/bin/systemctl disable vigosrv.service".into()),
        ];
        for t in refused {
            assert!(refuse(&t).is_some(), "{t:?} was allowed");
        }
    }

    #[test]
    fn ordinary_targets_pass() {
        let allowed = [
            Target::Path("/etc/nginx/nginx.conf".into()),
            Target::Path("/etc/vigor".into()),
            Target::Path("/usr/bin/vigorous".into()),
            Target::Service("nginx".into()),
            Target::Command("systemctl restart nginx".into()),
            Target::Command("echo vigo".into()),
        ];
        for t in allowed {
            assert_eq!(refuse(&t), None, "{t:?} was refused");
        }
    }
}
