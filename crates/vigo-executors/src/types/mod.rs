//! Resource types, one file each; registered in `crate::registry`.

pub mod blockinfile;
pub mod directory;
pub mod exec;
pub mod file;
pub mod file_line;
pub mod host;
pub mod ini;
pub mod json_file;
pub mod replace;
pub mod sshkey;
pub mod symlink;
