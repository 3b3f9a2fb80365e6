//! Black-box tests of the `vigo` command line.

mod common;

use common::{Fixture, exists, vigo};

const FOUR_PROBLEMS: &str = "name: broken
resources:
  - name: conf
    type: file
    target_path: {root}/a
    ownr: root
  - name: link
    type: file
    target_path: {root}/b
    notify: [Restart nginz]
  - name: first
    type: file
    target_path: {root}/c
    depends_on: [second]
  - name: second
    type: file
    target_path: {root}/d
    depends_on: [first]
  - name: migrate
    type: exec
    command: /usr/local/bin/migrate
";

#[test]
fn validation_reports_all_four_problems_with_their_lines() {
    let f = Fixture::new();
    f.module("broken.yaml", FOUR_PROBLEMS);
    let out = vigo().arg("validate").arg(f.config()).assert().code(1).get_output().stderr.clone();
    let text = String::from_utf8(out).expect("utf8");
    let file = "broken.yaml";
    let has =
        |line: u32, needle: &str| text.lines().any(|l| l.contains(&format!("{file}:{line}:")) && l.contains(needle));
    assert!(has(6, "unknown field `ownr`"), "misspelt field:\n{text}");
    assert!(text.contains("did you mean `owner`?"), "hint:\n{text}");
    assert!(has(10, "Restart nginz"), "missing notify target:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("dependency cycle") && l.contains("broken::first") && l.contains("broken::second")),
        "cycle:\n{text}"
    );
    assert!(has(19, "migrate"), "unguarded exec:\n{text}");
    assert!(text.contains("4 problem(s) found"), "{text}");
}

#[test]
fn validate_accepts_the_examples() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    vigo().arg("validate").arg(root).assert().success();
}

#[test]
fn guardrails_reject_vigo_itself_and_touch_nothing() {
    let f = Fixture::new();
    let marker = f.work().join("must-not-exist");
    let cases = [
        "    type: file\n    target_path: /etc/vigo/agent.yaml\n    content: x\n",
        "    type: file\n    target_path: /usr/local/bin/vigo\n    content: x\n",
        "    type: directory\n    path: /var/lib/vigo\n    ensure: absent\n    force: true\n",
        "    type: exec\n    command: systemctl stop vigo\n    creates: /tmp/x\n",
    ];
    for (i, body) in cases.iter().enumerate() {
        let text = format!(
            "name: g{i}\nresources:\n  - name: harmless\n    type: file\n    target_path: {}\n    content: x\n  - name: bad\n{body}",
            marker.display()
        );
        std::fs::write(f.config().join("modules/g.yaml"), text).expect("module");
        let out = vigo().arg("apply").arg(f.config()).assert().code(1).get_output().stderr.clone();
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("Vigo itself") && text.contains("cannot be switched off"), "case {i}:\n{text}");
        assert!(!exists(&marker), "case {i}: a resource ran although the config was refused");
    }
    assert!(
        !exists(std::path::Path::new("/etc/vigo/agent.yaml"))
            || std::fs::read_to_string("/etc/vigo/agent.yaml").map(|s| s != "x").unwrap_or(true)
    );
}

#[test]
fn detailed_exit_codes_follow_puppet() {
    let f = Fixture::new();
    f.module("m.yaml", "name: m\nresources:\n  - name: a\n    type: file\n    target_path: {root}/a\n    content: x\n");
    vigo().args(["apply", "--detailed-exitcodes"]).arg(f.config()).assert().code(2);
    vigo().args(["apply", "--detailed-exitcodes"]).arg(f.config()).assert().code(0);
    f.module(
        "n.yaml",
        "name: n\nresources:\n  - name: b\n    type: exec\n    command: \"exit 1\"\n    unless: \"false\"\n",
    );
    std::fs::remove_file(f.work().join("a")).expect("rm");
    vigo().args(["apply", "--detailed-exitcodes"]).arg(f.config()).assert().code(6);
    std::fs::write(f.work().join("a"), "x").expect("restore");
    vigo().args(["apply", "--detailed-exitcodes"]).arg(f.config()).assert().code(4);
    vigo().arg("apply").arg(f.config()).assert().code(1);
    vigo().args(["apply", "--no-such-flag"]).assert().code(1);
}

#[test]
fn json_report_has_the_documented_shape() {
    let f = Fixture::new();
    f.module(
        "m.yaml",
        "name: m\nresources:\n  - name: a\n    type: file\n    target_path: {root}/a\n    content: \"x\\n\"\n",
    );
    let out = vigo().args(["apply", "--json", "--noop"]).arg(f.config()).assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).expect("one JSON object");
    let r = &v["resources"][0];
    assert_eq!(r["module"], "m");
    assert_eq!(r["name"], "a");
    assert_eq!(r["type"], "file");
    assert_eq!(r["status"], "changed");
    assert!(r["changes"].as_array().is_some_and(|c| !c.is_empty()));
    assert!(r["diff"].as_str().is_some_and(|d| d.contains("+x")));
    assert!(r["duration_ms"].is_u64());
    assert_eq!(v["summary"]["changed"], 1);
    assert!(!f.work().join("a").exists(), "--noop wrote a file");
}

#[test]
fn human_output_is_short_and_plain_off_a_terminal() {
    let f = Fixture::new();
    f.module("m.yaml", "name: m\nresources:\n  - name: a\n    type: file\n    target_path: {root}/a\n    content: x\n  - name: b\n    type: file\n    target_path: {root}/b\n    content: x\n");
    std::fs::write(f.work().join("b"), "x").expect("in sync already");
    let out = vigo().arg("apply").arg(f.config()).assert().success().get_output().stdout.clone();
    let text = String::from_utf8(out).expect("utf8");
    assert!(!text.contains('\x1b'), "colour codes off a terminal");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("changed m::a (file)"), "{text}");
    assert!(lines[1].starts_with("2 resources: 1 changed, 0 failed, 0 skipped, 1 unchanged"), "{text}");
}

#[test]
fn types_are_listed_and_shown_from_the_registry() {
    let out = vigo().arg("types").assert().success().get_output().stdout.clone();
    let text = String::from_utf8(out).expect("utf8");
    for t in [
        "blockinfile",
        "directory",
        "exec",
        "file",
        "file_line",
        "host",
        "ini",
        "json_file",
        "replace",
        "sshkey",
        "symlink",
    ] {
        assert!(text.lines().any(|l| l.split_whitespace().next() == Some(t)), "{t} missing from:\n{text}");
    }
    let out = vigo().args(["types", "show", "file"]).assert().success().get_output().stdout.clone();
    let text = String::from_utf8(out).expect("utf8");
    assert!(text.contains("`target_path`") && text.contains("required") && text.contains("type: file"), "{text}");
    vigo().args(["types", "show", "nope"]).assert().code(1);
}

#[test]
fn traits_lists_collectors_by_name() {
    let out = vigo().args(["traits", "--json", "os"]).assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert!(v["os"]["name"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v.get("users").is_none(), "only the named collector runs");
}
