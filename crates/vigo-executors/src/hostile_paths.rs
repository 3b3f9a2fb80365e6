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
        crate::conformance::converge::<File>(&World::default(), &spec, String::new);
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

/// A stand-in for `/etc/shadow`: root's, 0600, outside the managed tree.
fn shadow(tmp: &Path) -> std::path::PathBuf {
    let etc = tmp.join("etc");
    std::fs::create_dir(&etc).expect("etc");
    let shadow = etc.join("shadow");
    std::fs::write(&shadow, "root:$6$hash:19000:0:99999:7:::\n").expect("shadow");
    chmod(&shadow, 0o600);
    shadow
}

fn shadow_untouched(shadow: &Path) {
    let meta = std::fs::metadata(shadow).expect("shadow");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o600),
        "the outside file's owner or mode changed"
    );
    assert_eq!(std::fs::read_to_string(shadow).expect("shadow"), "root:$6$hash:19000:0:99999:7:::\n");
}

#[test]
fn a_recursive_directory_does_not_chown_a_hard_link_to_a_file_outside_the_tree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    chmod(tmp.path(), 0o755);
    let shadow = shadow(tmp.path());
    let tree = tmp.path().join("www");
    std::fs::create_dir_all(tree.join("site")).expect("tree");
    std::fs::write(tree.join("site/index.html"), "hi\n").expect("index");
    // The tree's user plants a second name for the outside file inside her tree.
    std::fs::hard_link(&shadow, tree.join("site/shadow")).expect("hard link");
    let yaml = format!(
        "path: {}\nowner: \"{USER}\"\ngroup: \"{USER}\"\nmode: \"0750\"\nrecurse: true\nfile_mode: \"0644\"",
        tree.display()
    );
    let spec = spec::<Directory>(&yaml);
    let world = World::default();
    let drift =
        crate::conformance::converge::<Directory>(&world, &spec, || crate::types::file::tests::snapshot(tmp.path()))
            .expect("the rest of the tree drifts");
    shadow_untouched(&shadow);
    let index = std::fs::metadata(tree.join("site/index.html")).expect("index");
    assert_eq!((index.uid(), index.gid(), index.mode() & 0o7777), (USER, USER, 0o644), "the walk still fixes the rest");
    let below: Vec<String> = drift.changes.iter().filter_map(|c| c.from.clone()).collect();
    assert!(below.iter().all(|f| !f.contains("shadow")), "no change is predicted for the hard link: {below:?}");
    let warnings = world.warnings.take();
    let named = format!("{}: has 2 hard links; owner, group and mode left alone", tree.join("site/shadow").display());
    assert!(warnings.iter().any(|w| w.starts_with(&named)), "{warnings:?}");
    // Every later run leaves it alone again, and says so again.
    let again = Directory::check(&spec, &world.ctx(Mode::Enforce)).expect("check");
    assert_eq!(again, crate::executor::Check::InSync);
    assert!(world.warnings.take().iter().any(|w| w.starts_with(&named)));
    shadow_untouched(&shadow);
}

#[test]
fn a_hard_link_made_after_the_walk_looked_is_still_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    chmod(tmp.path(), 0o755);
    let shadow = shadow(tmp.path());
    let tree = tmp.path().join("www");
    std::fs::create_dir(&tree).expect("tree");
    let dir = crate::safe_fs::open_dir(&tree).expect("open");
    // The walk sees a file of its own (one link) here…
    std::fs::write(tree.join("f"), "x").expect("f");
    let seen = crate::safe_fs::stat_at(&dir, "f", &tree.join("f")).expect("stat").expect("present");
    assert_eq!(seen.nlink, 1);
    // …which is swapped for a second name of the outside file before the change is made.
    std::fs::remove_file(tree.join("f")).expect("rm");
    std::fs::hard_link(&shadow, tree.join("f")).expect("hard link");
    let want = crate::types::file::WantAttrs::resolve(
        Some(&USER.to_string()),
        None,
        Some(crate::types::file::FileMode(0o644)),
    )
    .expect("want");
    let left = want.apply_to_sole_link(&dir, "f", &seen, &tree.join("f")).expect("apply");
    assert_eq!(left, Some(2), "the open file's link count is what counts");
    shadow_untouched(&shadow);
}

/// A `file` resource on a name in the user's directory that is a second link to an
/// outside file: neither its attributes are changed (a chown there is a chown of the
/// outside file) nor its content read into a diff; the resource fails, naming it.
#[test]
fn a_file_resource_does_not_chown_or_show_a_hard_link_in_a_users_directory() {
    let (tmp, home, _victim) = tree();
    let shadow = shadow(tmp.path());
    let planted = home.join("app.conf");
    std::fs::hard_link(&shadow, &planted).expect("hard link");
    let attrs = format!("target_path: {}\nowner: \"{USER}\"\nmode: \"0644\"", planted.display());
    refused::<File>(&attrs, "has 2 hard links in a directory");
    let content = format!("target_path: {}\ncontent: \"x = 1\\n\"\nowner: \"{USER}\"", planted.display());
    let with_content = spec::<File>(&content);
    let world = World::default();
    for mode in [Mode::NoOp, Mode::Enforce] {
        let err = File::check(&with_content, &world.ctx(mode)).expect_err("check must refuse");
        assert!(!err.to_string().contains("$6$"), "the outside file's content leaked: {err}");
        assert!(File::apply(&with_content, &crate::executor::Drift::default(), &world.ctx(mode)).is_err());
    }
    shadow_untouched(&shadow);
    // In a directory only root can change, root's own hard links are managed as before.
    let etc_copy = tmp.path().join("etc/shadow.link");
    std::fs::hard_link(&shadow, &etc_copy).expect("root's link");
    let root = format!("target_path: {}\nmode: \"0640\"", etc_copy.display());
    let roots = spec::<File>(&root);
    assert!(matches!(File::check(&roots, &world.ctx(Mode::Enforce)).expect("check"), crate::executor::Check::Drift(_)));
}
