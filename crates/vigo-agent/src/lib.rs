//! The Vigo agent: the convergence runner and the local verbs of `vigo`.
//!
//! `runner` walks a validated plan; `report` is the data a run produces;
//! `output` renders reports for people; `cli/` has one file per subcommand.

pub mod checkin;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod enroll;
pub mod files;
pub mod load;
pub mod output;
pub mod paths;
pub mod queue;
pub mod report;
pub mod revoked;
pub mod runner;
pub mod sync;
pub mod watch;
