//! `kernel`: what `uname` would say, read from `/proc/sys/kernel`.
//!
//! Keys: `name` (`Linux`), `release` (`6.1.0-18-amd64`), `version` (the build
//! string), `arch` (`x86_64`, `aarch64`…), `major` and `minor` (numbers parsed from
//! the release, `null` when it does not start with them). Reading files instead of
//! calling uname(2) keeps the collector testable against a fixture root.

use serde_json::{Value, json};

use crate::{CollectError, Collector, Host};

pub struct Kernel;

const OSTYPE: &str = "proc/sys/kernel/ostype";
const OSRELEASE: &str = "proc/sys/kernel/osrelease";
const VERSION: &str = "proc/sys/kernel/version";
const ARCH: &str = "proc/sys/kernel/arch";

impl Collector for Kernel {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn summary(&self) -> &'static str {
        "kernel name, release, version and architecture"
    }

    fn collect(&self, host: &Host) -> Result<Value, CollectError> {
        let release = host.read_value(OSRELEASE)?;
        let (major, minor) = major_minor(&release);
        Ok(json!({
            "name": host.read_value(OSTYPE)?,
            "release": release,
            "version": host.read_value(VERSION)?,
            "arch": arch(host)?,
            "major": major,
            "minor": minor,
        }))
    }
}

/// `/proc/sys/kernel/arch` exists only on recent kernels; elsewhere the agent's
/// own architecture is the best answer, as it must match the kernel to run at all.
fn arch(host: &Host) -> Result<String, CollectError> {
    match host.read_optional(ARCH)? {
        Some(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        _ => Ok(std::env::consts::ARCH.to_string()),
    }
}

/// `6.1.0-18-amd64` → (6, 1); `5.15.153.1-microsoft-standard-WSL2` → (5, 15).
fn major_minor(release: &str) -> (Option<u64>, Option<u64>) {
    let mut parts = release.split('.').map(|part| {
        let end = part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len());
        part[..end].parse::<u64>().ok()
    });
    let major = parts.next().flatten();
    // A minor only means something after a clean major (`6.1`, not `v6x.1`).
    let minor = major.and(parts.next().flatten());
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;

    fn kernel_fixture(release: &str) -> Fixture {
        Fixture::new()
            .file(OSTYPE, "Linux\n")
            .file(OSRELEASE, &format!("{release}\n"))
            .file(VERSION, "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n")
    }

    #[test]
    fn reads_uname_values_from_proc() {
        let fx = kernel_fixture("6.1.0-18-amd64").file(ARCH, "aarch64\n");
        assert_eq!(
            Kernel.collect(&fx.host()).expect("kernel traits"),
            json!({
                "name": "Linux",
                "release": "6.1.0-18-amd64",
                "version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
                "arch": "aarch64",
                "major": 6,
                "minor": 1,
            })
        );
    }

    #[test]
    fn arch_falls_back_to_the_build_target() {
        let fx = kernel_fixture("5.14.0-362.8.1.el9_3.x86_64");
        assert_eq!(Kernel.collect(&fx.host()).expect("kernel traits")["arch"], std::env::consts::ARCH);
        let fx = fx.file(ARCH, "\n");
        assert_eq!(Kernel.collect(&fx.host()).expect("kernel traits")["arch"], std::env::consts::ARCH);
    }

    #[test]
    fn major_and_minor_come_from_the_release() {
        let cases = [
            ("6.1.0-18-amd64", (Some(6), Some(1))),
            ("5.14.0-362.8.1.el9_3.x86_64", (Some(5), Some(14))),
            ("5.15.153.1-microsoft-standard-WSL2", (Some(5), Some(15))),
            ("6.8-rc1", (Some(6), Some(8))),
            ("4", (Some(4), None)),
            ("custom", (None, None)),
            ("v6.1", (None, None)),
        ];
        for (release, expected) in cases {
            assert_eq!(major_minor(release), expected, "release {release}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let fx = Fixture::new().file(OSTYPE, "Linux\n").file(VERSION, "#1\n");
        let err = Kernel.collect(&fx.host()).expect_err("no osrelease");
        assert!(err.to_string().contains("proc/sys/kernel/osrelease"), "{err}");
    }
}
