//! The webhook service's integration tests (the HTTP front, the packaging worker, the container
//! image), one module per area, in one test binary so the SDKs are linked once. Each test owns
//! its moto server.

#[path = "support/fault_proxy.rs"]
mod fault_proxy;
#[path = "support/signer.rs"]
mod signer;
#[path = "support/mod.rs"]
mod support;

mod image;
mod service;
mod worker;
