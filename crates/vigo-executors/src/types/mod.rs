//! Resource types, one file each; registered in `crate::registry`.
