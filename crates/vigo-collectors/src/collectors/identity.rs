//! `identity`: what the host calls itself.
//!
//! Keys: `hostname` (the short name), `fqdn`, `domain` (`null` when none is known;
//! `fqdn` is then the short name) and `machine_id` (`null` when the host has none).
//!
//! The name is the kernel's (`/proc/sys/kernel/hostname`), or `/etc/hostname` when
//! the kernel has none. The domain is the first of: the part after the first dot of
//! that name, the kernel domain name unless `(none)`, the canonical name of the
//! host's `/etc/hosts` line when it extends the short name, and the `domain`
//! directive of `/etc/resolv.conf`. No DNS query is made: traits must not hang on
//! an unreachable resolver.

use serde_json::{Value, json};

use crate::{CollectError, Collector, Host};

pub struct Identity;

const KERNEL_HOSTNAME: &str = "proc/sys/kernel/hostname";
const ETC_HOSTNAME: &str = "etc/hostname";
const KERNEL_DOMAINNAME: &str = "proc/sys/kernel/domainname";
const HOSTS: &str = "etc/hosts";
const RESOLV_CONF: &str = "etc/resolv.conf";
const MACHINE_ID: &[&str] = &["etc/machine-id", "var/lib/dbus/machine-id"];

impl Collector for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn summary(&self) -> &'static str {
        "hostname, domain, fully qualified name and machine id"
    }

    fn collect(&self, host: &Host) -> Result<Value, CollectError> {
        let name = hostname(host)?;
        let (short, own_domain) = match name.split_once('.') {
            Some((short, domain)) if !domain.is_empty() => (short.to_string(), Some(domain.to_string())),
            _ => (name.trim_end_matches('.').to_string(), None),
        };
        let domain = match own_domain {
            Some(domain) => Some(domain),
            None => domain_of(host, &short)?,
        };
        let fqdn = match &domain {
            Some(domain) => format!("{short}.{domain}"),
            None => short.clone(),
        };
        Ok(json!({
            "hostname": short,
            "fqdn": fqdn,
            "domain": domain,
            "machine_id": machine_id(host)?,
        }))
    }
}

/// The kernel's name, or the configured one when the kernel has none yet.
fn hostname(host: &Host) -> Result<String, CollectError> {
    let kernel = host.read_optional(KERNEL_HOSTNAME)?;
    if let Some(name) = kernel.as_deref().and_then(meaningful) {
        return Ok(name.to_string());
    }
    let configured = host.read_optional(ETC_HOSTNAME)?;
    // hostname(5) allows comments; the name is the first other line.
    let name = configured
        .as_deref()
        .and_then(|text| text.lines().map(str::trim).find(|line| !line.is_empty() && !line.starts_with('#')));
    match name {
        Some(name) => Ok(name.to_string()),
        None if kernel.is_none() && configured.is_none() => {
            Err(CollectError::NotFound { paths: vec![host.path(KERNEL_HOSTNAME), host.path(ETC_HOSTNAME)] })
        }
        None => Err(CollectError::Invalid {
            path: host.path(ETC_HOSTNAME),
            reason: format!("no hostname set here nor in {}", host.path(KERNEL_HOSTNAME).display()),
        }),
    }
}

/// The first line, unless it is empty or the kernel's `(none)` placeholder.
fn meaningful(text: &str) -> Option<&str> {
    let value = text.lines().next()?.trim();
    (!value.is_empty() && value != "(none)").then_some(value)
}

fn domain_of(host: &Host, short: &str) -> Result<Option<String>, CollectError> {
    if let Some(domain) = host.read_optional(KERNEL_DOMAINNAME)?.as_deref().and_then(meaningful) {
        return Ok(Some(domain.to_string()));
    }
    if let Some(domain) = host.read_optional(HOSTS)?.as_deref().and_then(|text| domain_from_hosts(text, short)) {
        return Ok(Some(domain));
    }
    Ok(host.read_optional(RESOLV_CONF)?.as_deref().and_then(domain_from_resolv_conf))
}

/// In `127.0.1.1 web01.example.com web01`, the canonical (first) name extends the
/// short name, so the domain is `example.com`. A line where the short name is only
/// an alias of something else (`localhost.localdomain`) says nothing about it.
fn domain_from_hosts(text: &str, short: &str) -> Option<String> {
    let prefix = format!("{short}.");
    text.lines().find_map(|line| {
        let line = line.split_once('#').map_or(line, |(before, _)| before);
        let mut fields = line.split_whitespace();
        let _address = fields.next()?;
        let canonical = fields.next()?;
        let extends = canonical.len() > prefix.len()
            && canonical.is_char_boundary(prefix.len())
            && canonical[..prefix.len()].eq_ignore_ascii_case(&prefix);
        extends.then(|| canonical[prefix.len()..].trim_end_matches('.').to_string()).filter(|d| !d.is_empty())
    })
}

fn domain_from_resolv_conf(text: &str) -> Option<String> {
    // resolv.conf(5): the last `domain` line wins.
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next()? == "domain").then(|| fields.next()).flatten()
        })
        .next_back()
        .map(|domain| domain.trim_end_matches('.').to_string())
        .filter(|domain| !domain.is_empty())
}

/// systemd's id, else the older D-Bus one; anything but 32 hex digits (an empty
/// file in an image, `uninitialized` during first boot) is no id at all.
fn machine_id(host: &Host) -> Result<Option<String>, CollectError> {
    for rel in MACHINE_ID {
        let Some(text) = host.read_optional(rel)? else {
            continue;
        };
        let id = text.trim();
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Some(id.to_ascii_lowercase()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;

    /// Files to write into a fixture: (path under the root, content).
    type Files<'a> = &'a [(&'a str, &'a str)];

    const ID: &str = "4c4c4544004d3510804bb4c04f4b4e32";

    fn collect(files: &[(&str, &str)]) -> Value {
        let fx = files.iter().fold(Fixture::new(), |fx, (rel, text)| fx.file(rel, text));
        Identity.collect(&fx.host()).expect("identity traits")
    }

    #[test]
    fn domain_sources_in_order_of_preference() {
        let hosts = "127.0.0.1 localhost\n127.0.1.1 web01.hosts.example web01\n";
        let resolv = "nameserver 10.0.0.1\ndomain resolv.example\n";
        let cases: [(&str, Files, Value); 7] = [
            (
                "kernel name with a dot",
                &[(KERNEL_HOSTNAME, "web01.own.example\n"), (HOSTS, hosts)],
                json!({"hostname": "web01", "fqdn": "web01.own.example", "domain": "own.example"}),
            ),
            (
                "kernel domain name",
                &[(KERNEL_HOSTNAME, "web01\n"), (KERNEL_DOMAINNAME, "nis.example\n"), (HOSTS, hosts)],
                json!({"hostname": "web01", "fqdn": "web01.nis.example", "domain": "nis.example"}),
            ),
            (
                "hosts when the kernel domain is (none)",
                &[(KERNEL_HOSTNAME, "web01\n"), (KERNEL_DOMAINNAME, "(none)\n"), (HOSTS, hosts), (RESOLV_CONF, resolv)],
                json!({"hostname": "web01", "fqdn": "web01.hosts.example", "domain": "hosts.example"}),
            ),
            (
                "resolv.conf last",
                &[(KERNEL_HOSTNAME, "web01\n"), (HOSTS, "127.0.0.1 localhost\n"), (RESOLV_CONF, resolv)],
                json!({"hostname": "web01", "fqdn": "web01.resolv.example", "domain": "resolv.example"}),
            ),
            (
                "no domain anywhere",
                &[(KERNEL_HOSTNAME, "web01\n")],
                json!({"hostname": "web01", "fqdn": "web01", "domain": null}),
            ),
            (
                "etc/hostname when the kernel has none",
                &[(KERNEL_HOSTNAME, "(none)\n"), (ETC_HOSTNAME, "# set by installer\n\nbox7\n")],
                json!({"hostname": "box7", "fqdn": "box7", "domain": null}),
            ),
            (
                "etc/hostname without proc",
                &[(ETC_HOSTNAME, "box7.lan\n")],
                json!({"hostname": "box7", "fqdn": "box7.lan", "domain": "lan"}),
            ),
        ];
        for (case, files, expected) in cases {
            let mut traits = collect(files);
            traits.as_object_mut().expect("object").remove("machine_id");
            assert_eq!(traits, expected, "{case}");
        }
    }

    #[test]
    fn hosts_lines_that_do_not_extend_the_short_name_are_ignored() {
        let cases = [
            ("127.0.0.1 localhost.localdomain localhost web01\n", None),
            ("10.0.0.5 web01\n", None),
            ("10.0.0.5 web012.example.com web012\n", None),
            ("# 10.0.0.5 web01.commented.example web01\n", None),
            ("10.0.0.5 WEB01.Example.COM web01 # primary\n", Some("Example.COM")),
            ("10.0.0.5 web01.example.com.\n", Some("example.com")),
            ("10.0.0.5 web01.\n", None),
            ("10.0.0.5\n\n10.0.0.6 web01.second.example\n", Some("second.example")),
        ];
        for (text, expected) in cases {
            assert_eq!(domain_from_hosts(text, "web01").as_deref(), expected, "hosts {text:?}");
        }
    }

    #[test]
    fn resolv_conf_uses_the_last_domain_line() {
        assert_eq!(domain_from_resolv_conf("domain a.example\ndomain b.example.\n").as_deref(), Some("b.example"));
        assert_eq!(domain_from_resolv_conf("search a.example\n").as_deref(), None);
        assert_eq!(domain_from_resolv_conf("domain\n").as_deref(), None);
    }

    #[test]
    fn machine_id_prefers_systemd_and_rejects_placeholders() {
        let dbus = "0123456789abcdef0123456789ABCDEF";
        let cases: [(Files, Value); 4] = [
            (&[("etc/machine-id", &format!("{ID}\n")), ("var/lib/dbus/machine-id", dbus)], json!(ID)),
            (
                &[("etc/machine-id", "uninitialized\n"), ("var/lib/dbus/machine-id", dbus)],
                json!("0123456789abcdef0123456789abcdef"),
            ),
            (&[("etc/machine-id", "")], json!(null)),
            (&[], json!(null)),
        ];
        for (files, expected) in cases {
            let mut all = vec![(KERNEL_HOSTNAME, "web01\n")];
            all.extend_from_slice(files);
            assert_eq!(collect(&all)["machine_id"], expected, "files {files:?}");
        }
    }

    #[test]
    fn no_hostname_source_is_an_error_naming_both() {
        let fx = Fixture::new();
        let message = Identity.collect(&fx.host()).expect_err("no hostname").to_string();
        assert!(message.contains(KERNEL_HOSTNAME) && message.contains(ETC_HOSTNAME), "{message}");

        let fx = Fixture::new().file(KERNEL_HOSTNAME, "(none)\n").file(ETC_HOSTNAME, "# empty\n");
        let message = Identity.collect(&fx.host()).expect_err("no hostname").to_string();
        assert!(message.contains("no hostname set"), "{message}");
    }
}
