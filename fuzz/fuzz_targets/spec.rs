//! Spec text (a file someone wrote, or the variable the drift-correction task carries): never
//! a panic; every error is located (line and column from 1) and says something; a spec that
//! validates reads back the same from its carried form, and builds a desired state for the
//! facts of its network mode (new VPC, existing VPC; with or without an API) whose every node
//! reads into its kind's typed fields and whose references all resolve: the engine plans it
//! from nothing without an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reconciler::facts::{ExistingNetwork, Facts};
use reconciler::spec::{parse, to_carried};
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let spec = match parse("fuzz.yaml", text) {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without a problem");
            for e in &errors.0 {
                assert!(e.line >= 1 && e.column >= 1, "unlocated: {e}");
                assert!(!e.message.trim().is_empty(), "no message: {e}");
            }
            return;
        }
        Ok(spec) => spec,
    };
    let again = parse("carried", &to_carried(&spec)).unwrap_or_else(|e| panic!("the carried form does not parse: {e}"));
    assert_eq!(again, spec, "the carried form reads back differently");
    let azs = ["a", "b", "c", "d", "e", "f"].iter().map(|z| format!("{}{z}", spec.region)).collect();
    let existing = spec.network.existing.as_ref().map(|e| ExistingNetwork {
        vpc_id: e.vpc_id.clone(),
        cidr: "10.0.0.0/16".into(),
        private_subnet_ids: e.private_subnet_ids.clone(),
    });
    let facts = Facts { azs, zones_in_use: BTreeMap::new(), existing, account: "123456789012".into() };
    let state = match reconciler::desired::build(&spec, &facts) {
        Ok(state) => state,
        // A valid spec the facts cannot serve (more zones than the region has): said, not a panic.
        Err(e) => {
            assert!(!format!("{e:#}").trim().is_empty());
            return;
        }
    };
    let kinds = reconciler::resources::registry();
    reconciler::engine::fields::check_desired(&kinds, &state.resources, &state.externals)
        .unwrap_or_else(|e| panic!("the desired state of a valid spec does not fit its kinds: {e:#}"));
    let plan = reconciler::engine::plan(&spec.name, &kinds, &state.resources, &[], &state.externals)
        .unwrap_or_else(|e| panic!("the desired state of a valid spec does not plan: {e:#}"));
    assert_eq!(plan.resources.len(), state.resources.len());
});
