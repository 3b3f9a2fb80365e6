//! The ordered plan: declaration order refined by dependencies.

/// Resources in the order they run, as indexes into `Config::resources()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub order: Vec<usize>,
}
