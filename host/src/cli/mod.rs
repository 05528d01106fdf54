//! The `sluice` command line: argument parsing and the subcommands.

pub mod dkim;
pub mod fronts;
pub mod learn;
pub mod policy_test;
pub mod progress;
pub mod queue;
pub mod registry;
pub mod relay;
pub mod scaffold;
