//! A saved plan handed to `apply --plan FILE` (by a CI system, say): refused with a clear
//! error unless it is a plan of this stack with the fingerprint of the plan computed now
//! (malformed, another stack's, or made from other live state or another spec).
#![no_main]
use libfuzzer_sys::fuzz_target;
use reconciler::changes::Plan;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let plan = Plan { stack: "webhook".into(), resources: vec![], notes: vec![], fingerprint: "0123456789abcdef".into() };
    match reconciler::plan::check_saved("saved.json", text, &plan, "spec.yaml") {
        Ok(()) => {
            // Accepted: independently, it is JSON naming this stack and this fingerprint.
            let doc: serde_json::Value = serde_json::from_str(text).expect("accepted what is not JSON");
            assert_eq!(doc["stack"], "webhook", "accepted another stack's plan");
            assert_eq!(doc["fingerprint"], "0123456789abcdef", "accepted a plan of other live state");
        }
        Err(e) => {
            let e = format!("{e:#}");
            assert!(e.contains("saved.json"), "the refusal does not name the file: {e}");
        }
    }
});
