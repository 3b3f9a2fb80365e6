//! vigo-agent
