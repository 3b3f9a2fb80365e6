//! Convergence runner behaviour over real files with the built-in executors.

mod common;

use common::{Fixture, find};
use std::os::unix::fs::MetadataExt as _;
use vigo_agent::report::Status;
use vigo_executors::Mode;

#[test]
fn hand_edits_are_repaired_and_reported_changed() {
    let f = Fixture::new();
    f.module("m.yaml", "name: m\nresources:\n  - name: conf\n    type: file\n    target_path: {root}/app.conf\n    content: \"port = 80\\n\"\n    mode: \"0640\"\n");
    assert_eq!(find(&f.run(Mode::Enforce), "conf").status, Status::Changed);
    assert_eq!(find(&f.run(Mode::Enforce), "conf").status, Status::Unchanged);
    std::fs::write(f.work().join("app.conf"), "port = 8080\n").expect("hand edit");
    let r = f.run(Mode::Enforce);
    assert_eq!(find(&r, "conf").status, Status::Changed);
    assert!(find(&r, "conf").diff.as_deref().is_some_and(|d| d.contains("-port = 8080") && d.contains("+port = 80")));
    assert_eq!(f.read("app.conf"), "port = 80\n");
}

const HANDLER: &str = "name: m
resources:
  - name: one
    type: file
    target_path: {root}/one
    content: \"1\\n\"
    notify: [handler]
  - name: two
    type: file
    target_path: {root}/two
    content: \"2\\n\"
    notify: [handler]
  - name: handler
    type: exec
    command: \"echo ran >> {root}/count\"
    when: changed
";

#[test]
fn a_handler_runs_once_when_either_notifier_changed_and_never_otherwise() {
    let f = Fixture::new();
    f.module("m.yaml", HANDLER);
    // Both notifiers change: the handler runs once.
    let r = f.run(Mode::Enforce);
    assert_eq!(find(&r, "handler").status, Status::Changed);
    assert_eq!(f.read("count"), "ran\n");
    // Neither changes: it does not run.
    let r = f.run(Mode::Enforce);
    assert_eq!(find(&r, "handler").status, Status::Skipped);
    assert_eq!(f.read("count"), "ran\n");
    // Only one changes: it runs once more.
    std::fs::write(f.work().join("two"), "drifted\n").expect("edit");
    let r = f.run(Mode::Enforce);
    assert_eq!(find(&r, "one").status, Status::Unchanged);
    assert_eq!(find(&r, "handler").status, Status::Changed);
    assert_eq!(f.read("count"), "ran\nran\n");
}

#[test]
fn a_handler_declared_first_still_runs_after_its_notifier() {
    let f = Fixture::new();
    f.module("m.yaml", "name: m\nresources:\n  - name: handler\n    type: exec\n    command: \"cat {root}/data > {root}/copy\"\n    when: changed\n  - name: data\n    type: file\n    target_path: {root}/data\n    content: \"fresh\\n\"\n    notify: [handler]\n");
    let r = f.run(Mode::Enforce);
    let order: Vec<&str> = r.resources.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(order, ["data", "handler"]);
    assert_eq!(f.read("copy"), "fresh\n");
}

#[test]
fn noop_predicts_exactly_the_changes_of_the_real_run_and_changes_nothing() {
    let f = Fixture::new();
    f.module("m.yaml", HANDLER);
    std::fs::write(f.work().join("one"), "old\n").expect("seed");
    let predicted = f.run(Mode::NoOp);
    assert!(!f.work().join("two").exists(), "noop created a file");
    assert_eq!(std::fs::read_to_string(f.work().join("one")).expect("one"), "old\n");
    assert!(!f.work().join("count").exists(), "noop ran a command");
    let real = f.run(Mode::Enforce);
    let view = |r: &vigo_agent::report::Report| -> Vec<(String, Status, serde_json::Value, Option<String>)> {
        r.resources
            .iter()
            .map(|x| (x.name.clone(), x.status, serde_json::to_value(&x.changes).expect("json"), x.diff.clone()))
            .collect()
    };
    assert_eq!(view(&predicted), view(&real));
    assert!(find(&predicted, "one").diff.as_deref().is_some_and(|d| d.contains("-old")));
}

#[test]
fn a_failed_resource_skips_its_dependents_with_the_reason() {
    let f = Fixture::new();
    f.module("m.yaml", "name: m\nresources:\n  - name: broken\n    type: exec\n    command: \"exit 3\"\n    creates: {root}/never\n  - name: dependent\n    type: file\n    target_path: {root}/dep\n    content: x\n    depends_on: [broken]\n  - name: second-hand\n    type: file\n    target_path: {root}/dep2\n    content: x\n    depends_on: [dependent]\n  - name: independent\n    type: file\n    target_path: {root}/ind\n    content: x\n");
    let r = f.run(Mode::Enforce);
    assert_eq!(find(&r, "broken").status, Status::Failed);
    assert!(find(&r, "broken").error.as_deref().is_some_and(|e| e.contains('3')), "{:?}", find(&r, "broken").error);
    for name in ["dependent", "second-hand"] {
        assert_eq!(find(&r, name).status, Status::Skipped);
        assert!(find(&r, name).reason.as_deref().is_some_and(|w| w.contains("failed")));
    }
    assert!(!f.work().join("dep").exists());
    assert_eq!(find(&r, "independent").status, Status::Changed);
    assert_eq!(r.detailed_exit_code(), 6);
}

#[test]
fn conditions_see_traits_and_templates_see_traits_and_vars() {
    let f = Fixture::new();
    f.template("motd.tmpl", "{{ .traits.identity.hostname }} on {{ .traits.os.name }}:{{ .vars.port }}\n");
    f.module("m.yaml", "name: m\nvars:\n  port: 8080\nresources:\n  - name: motd\n    type: file\n    target_path: {root}/motd\n    source: templates/motd.tmpl\n    when: \"os_family('debian') && hostname_matches('web-*')\"\n  - name: redhat-only\n    type: file\n    target_path: {root}/rh\n    content: x\n    when: \"os_family('redhat')\"\n");
    let r = f.run(Mode::Enforce);
    assert_eq!(f.read("motd"), "web-1 on debian:8080\n");
    assert_eq!(find(&r, "redhat-only").status, Status::Skipped);
    assert!(!f.work().join("rh").exists());
}

#[test]
fn sensitive_content_never_appears_in_reports() {
    let f = Fixture::new();
    f.module("m.yaml", "name: m\nresources:\n  - name: token\n    type: file\n    target_path: {root}/token\n    content: \"s3cr3t-value\\n\"\n    sensitive: true\n");
    std::fs::write(f.work().join("token"), "old-s3cr3t\n").expect("seed");
    let r = f.run(Mode::Enforce);
    let json = serde_json::to_string(&r).expect("json");
    assert!(!json.contains("s3cr3t"), "{json}");
    assert!(json.contains("[redacted]"));
    assert_eq!(f.read("token"), "s3cr3t-value\n");
}

#[test]
fn a_hard_link_left_alone_by_a_recursive_directory_is_a_warning_in_the_report() {
    let fx = Fixture::new();
    let outside = fx.dir.path().join("shadow");
    std::fs::write(&outside, "root's\n").expect("outside");
    std::fs::set_permissions(&outside, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    std::fs::create_dir(fx.work().join("tree")).expect("tree");
    std::fs::hard_link(&outside, fx.work().join("tree/shadow")).expect("hard link");
    fx.module(
        "m.yaml",
        "name: m\nresources:\n  - name: tree\n    type: directory\n    path: {root}/tree\n    owner: \"65534\"\n    recurse: true\n    file_mode: \"0644\"\n",
    );
    let named =
        format!("{}: has 2 hard links; owner, group and mode left alone", fx.work().join("tree/shadow").display());
    for (mode, status) in
        [(Mode::NoOp, Status::Changed), (Mode::Enforce, Status::Changed), (Mode::Enforce, Status::Unchanged)]
    {
        let report = fx.run(mode);
        let tree = find(&report, "tree");
        assert_eq!(tree.status, status, "{mode:?}: {tree:?}");
        assert_eq!(tree.warnings.len(), 1, "{mode:?}: {:?}", tree.warnings);
        assert!(tree.warnings[0].starts_with(&named), "{mode:?}: {:?}", tree.warnings);
        let json = serde_json::to_value(&report).expect("json");
        assert!(json["resources"][0]["warnings"][0].as_str().is_some_and(|w| w.starts_with(&named)), "{json}");
        let shown = vigo_agent::output::render(&report, vigo_agent::output::Style { color: false }, false);
        assert!(shown.contains(&format!("warning m::tree (directory): {named}")), "{shown}");
    }
    let meta = std::fs::metadata(&outside).expect("outside");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600), "the outside file is untouched");
}
