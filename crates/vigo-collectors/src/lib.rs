//! vigo-collectors
