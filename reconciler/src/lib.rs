//! fargate-reconciler: a declarative, stateless reconciler for a webhook stack on AWS Fargate.
//!
//! `spec` (YAML model and validation) → `desired` (pure desired state) → `engine` (observe by
//! ownership tags, diff, plan, apply) with one file per resource kind under `resources`.

mod args;
pub mod changes;
pub mod cli;
mod commands;
pub mod desired;
pub mod engine;
pub mod facts;
pub mod ids;
pub mod log;
pub mod metrics;
pub mod outputs;
pub mod plan;
pub mod resources;
pub mod run;
mod session;
pub mod spec;
pub mod status;
pub mod verify;
