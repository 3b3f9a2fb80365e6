//! Resource types, one file each; registered in `crate::registry`.

pub mod directory;
pub mod file;
pub mod file_line;
pub mod host;
pub mod json_file;
pub mod replace;
pub mod symlink;
