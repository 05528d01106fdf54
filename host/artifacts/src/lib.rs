//! Paths of the policy components built by this crate's build script, for the host's tests
//! and benchmarks. Building this crate builds every policy; a test that uses a component
//! refers to it by constant, so a renamed or removed policy breaks the build, not a test run.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
