//! The reconciler's integration tests, one module per area, in one test binary so the AWS SDKs
//! and the reconciler are linked once, not once per area (`cargo nextest run -E
//! 'test(/^network::/)'` runs one area). Each test owns its moto server.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/fault_proxy.rs"]
mod fault_proxy;
#[path = "support/mod.rs"]
mod support;

mod aws_behaviour;
mod compute;
mod drift_correction;
mod edge;
mod network;
mod policy;
mod safety;
mod spec_corpus;
mod spec_properties;
mod structure;
