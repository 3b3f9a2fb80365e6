//! Reading a configuration from disk into memory: the only I/O this crate does.
//!
//! A configuration is a directory (`modules/*.yaml`, `templates/**`) or a single
//! module file (templates then live in `templates/` beside it). Everything after
//! this step works on the in-memory [`Sources`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diagnostics, Loc};

/// Largest configuration file read (modules and templates alike).
pub const MAX_FILE: u64 = 8 * 1024 * 1024;

/// The text of a configuration, as read.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub root: PathBuf,
    /// Module files in load order (sorted by path), with their text.
    pub modules: Vec<(PathBuf, String)>,
    /// Templates by name relative to the root (`templates/a.tmpl`).
    pub templates: BTreeMap<String, String>,
}

impl Sources {
    /// Sources from strings, for tests and tools.
    pub fn from_strings(modules: &[(&str, &str)], templates: &[(&str, &str)]) -> Self {
        Self {
            root: PathBuf::from("."),
            modules: modules.iter().map(|(p, t)| (PathBuf::from(p), t.to_string())).collect(),
            templates: templates.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect(),
        }
    }
}

/// Reads a configuration directory or a single module file.
pub fn read(path: &Path) -> Result<Sources, Diagnostics> {
    let mut diags = Diagnostics::default();
    let meta = std::fs::metadata(path).map_err(|e| one(path, format!("cannot read configuration: {e}")))?;
    let (root, module_files) = if meta.is_dir() {
        let dir = path.join("modules");
        if !dir.is_dir() {
            return Err(one(path, "no `modules/` directory".into()));
        }
        (path.to_path_buf(), yaml_files(&dir, &mut diags))
    } else {
        let root = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        (root, vec![path.to_path_buf()])
    };
    let mut sources = Sources { root: root.clone(), ..Sources::default() };
    for file in module_files {
        if let Some(text) = read_text(&file, &mut diags) {
            sources.modules.push((file, text));
        }
    }
    let tdir = root.join("templates");
    if tdir.is_dir() {
        let mut files = Vec::new();
        walk(&tdir, &mut files, &mut diags);
        files.sort();
        for file in files {
            let Some(text) = read_text(&file, &mut diags) else { continue };
            let name = file.strip_prefix(&root).unwrap_or(&file).to_string_lossy().replace('\\', "/");
            sources.templates.insert(name, text);
        }
    }
    if diags.is_empty() { Ok(sources) } else { Err(diags) }
}

fn one(path: &Path, message: String) -> Diagnostics {
    Diagnostics(vec![Diagnostic::new(Loc::file(path), message)])
}

fn yaml_files(dir: &Path, diags: &mut Diagnostics) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::new(Loc::file(dir), format!("cannot list directory: {e}")));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Diagnostics) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::new(Loc::file(dir), format!("cannot list directory: {e}")));
            return;
        }
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, out, diags),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

fn read_text(path: &Path, diags: &mut Diagnostics) -> Option<String> {
    let fail = |diags: &mut Diagnostics, msg: String| diags.push(Diagnostic::new(Loc::file(path), msg));
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE => {
            fail(diags, format!("file is larger than {MAX_FILE} bytes"));
            return None;
        }
        Err(e) => {
            fail(diags, format!("cannot read: {e}"));
            return None;
        }
        Ok(_) => {}
    }
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                fail(diags, format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()));
                None
            }
        },
        Err(e) => {
            fail(diags, format!("cannot read: {e}"));
            None
        }
    }
}
