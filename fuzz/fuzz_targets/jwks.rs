//! A JWKS document (what the app's key URL returns): never a panic; a document accepted holds
//! at least one usable key, and each key it skipped is named.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|doc: &[u8]| {
    match service::jwks::parse(doc) {
        Ok((keys, skipped)) => {
            assert!(!keys.is_empty(), "accepted a JWKS with no usable key");
            assert!(skipped.iter().all(|s| s.starts_with("key ")), "a skipped key is not named: {skipped:?}");
        }
        Err(why) => assert!(why.starts_with("JWKS "), "an unclear refusal: {why}"),
    }
});
