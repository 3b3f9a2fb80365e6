//! Attack tests for the path walker: a user who controls a directory on the way to a
//! target tries to redirect root's writes with symlinks (tests only).

use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::Path;

use crate::conformance::{World, spec};
use crate::executor::{Executor, Mode};
use crate::types::directory::Directory;
use crate::types::file::File;
use crate::types::file_line::FileLine;

/// The uid and gid playing the hostile user.
const USER: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A temp tree: `home` belongs to the user (as her home would), `victim` is root's.
fn tree() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    chmod(tmp.path(), 0o755);
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).expect("home");
    std::os::unix::fs::chown(&home, Some(USER), Some(USER)).expect("chown home");
    let victim = tmp.path().join("victim");
    std::fs::create_dir_all(victim.join("bin")).expect("victim");
    std::fs::write(victim.join("keep"), "root's\n").expect("keep");
    (tmp, home, victim)
}

/// The user plants `link -> target` in her own directory.
fn plant(link: &Path, target: &Path) {
    symlink(target, link).expect("symlink");
    lchown(link, Some(USER), Some(USER)).expect("lchown");
}

fn victim_untouched(victim: &Path) {
    let names: Vec<_> = std::fs::read_dir(victim).expect("ls").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names.len(), 2, "nothing was added to the victim directory: {names:?}");
    assert_eq!(std::fs::read_to_string(victim.join("keep")).expect("keep"), "root's\n");
    assert_eq!(std::fs::metadata(victim.join("bin")).expect("bin").uid(), 0, "victim/bin still root's");
}

fn refused<E: Executor>(yaml: &str, expect: &str) {
    let spec = spec::<E>(yaml);
    let world = World::default();
    for mode in [Mode::NoOp, Mode::Enforce] {
        let err = E::check(&spec, &world.ctx(mode)).expect_err("check must refuse");
        assert!(err.to_string().contains(expect), "{}: {err}", E::NAME);
    }
}

#[test]
fn a_file_is_not_written_through_a_users_link_in_the_parent_path() {
    let (_tmp, home, victim) = tree();
    plant(&home.join(".config"), &victim);
    let target = home.join(".config/app.conf");
    let yaml = format!("target_path: {}\ncontent: \"options x\\n\"\nowner: \"{USER}\"", target.display());
    refused::<File>(&yaml, &format!("{}: is a symlink owned by uid {USER}", home.join(".config").display()));
    victim_untouched(&victim);
}

#[test]
fn a_directory_is_not_chowned_through_a_users_link() {
    let (_tmp, home, victim) = tree();
    plant(&home.join(".local"), &victim);
    let yaml = format!("path: {}\nowner: \"{USER}\"", home.join(".local/bin").display());
    refused::<Directory>(&yaml, "refusing to follow it");
    let absent = format!("path: {}\nensure: absent\nforce: true", home.join(".local/bin").display());
    refused::<Directory>(&absent, "refusing to follow it");
    victim_untouched(&victim);
}

#[test]
fn an_editor_does_not_edit_through_a_users_link() {
    let (_tmp, home, victim) = tree();
    plant(&home.join("cfg"), &victim);
    let yaml = format!("path: {}\nline: evil", home.join("cfg/keep").display());
    refused::<FileLine>(&yaml, "refusing to follow it");
    victim_untouched(&victim);
}

#[test]
fn a_root_link_in_a_world_writable_sticky_directory_is_not_followed() {
    let (tmp, _home, victim) = tree();
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).expect("shared");
    chmod(&shared, 0o1777);
    symlink(&victim, shared.join("link")).expect("root's own link");
    let yaml = format!("target_path: {}\ncontent: x", shared.join("link/new").display());
    refused::<File>(&yaml, "refusing to follow it");
    victim_untouched(&victim);
}

#[test]
fn root_links_in_root_directories_are_still_followed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    chmod(tmp.path(), 0o755);
    let alternatives = tmp.path().join("alternatives");
    let real = tmp.path().join("real");
    std::fs::create_dir(&alternatives).expect("alternatives");
    std::fs::create_dir(&real).expect("real");
    symlink("../real", alternatives.join("editor.d")).expect("relative link");
    symlink(&real, alternatives.join("abs")).expect("absolute link");
    for via in ["editor.d", "abs"] {
        let target = alternatives.join(via).join(format!("{via}.conf"));
        let spec = spec::<File>(&format!("target_path: {}\ncontent: \"ok\\n\"", target.display()));
        crate::conformance::converge::<File>(&World::default(), &spec, || String::new());
        assert_eq!(std::fs::read_to_string(real.join(format!("{via}.conf"))).expect("written"), "ok\n");
    }
}

#[test]
fn the_guardrail_judges_where_a_path_really_leads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    chmod(tmp.path(), 0o755);
    symlink("/etc", tmp.path().join("etc-link")).expect("link");
    let before = std::fs::symlink_metadata("/etc/vigo").ok().map(|m| (m.ino(), m.mtime()));
    let yaml = format!("target_path: {}\ncontent: x", tmp.path().join("etc-link/vigo").display());
    refused::<File>(&yaml, "resolves to /etc/vigo");
    let after = std::fs::symlink_metadata("/etc/vigo").ok().map(|m| (m.ino(), m.mtime()));
    assert_eq!(before, after, "/etc/vigo untouched");
}
