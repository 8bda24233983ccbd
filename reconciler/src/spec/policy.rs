//! The least-privilege policy of one spec, as `reconciler policy FILE --for plan|apply` prints
//! it: what the registry's kinds declare, the reads of the layout's facts and of `verify`, and
//! the stack lock's object. One definition, because the drift-correction task role holds
//! exactly this document (and validation refuses a spec whose document would not fit there).

use super::Spec;
use crate::engine::policy::{self, Purpose};
use serde_json::Value;

/// The IAM actions `facts::gather` calls (the layout's facts: zones, an existing VPC, the
/// account), added to every policy.
pub const FACTS_READS: &[&str] = &["ec2:DescribeAvailabilityZones", "ec2:DescribeVpcs", "ec2:DescribeSubnets", "sts:GetCallerIdentity"];

/// The reads `verify` makes beside observe's (added to the plan policy, and so to apply's).
pub const VERIFY_READS: &[&str] = &[
    "ecs:DescribeServices",
    "ecs:ListTasks",
    "ecs:DescribeTasks",
    "servicediscovery:ListInstances",
    "servicediscovery:GetInstancesHealthStatus",
];

/// IAM's limit on the inline policies of one role, in characters without whitespace.
pub const INLINE_LIMIT: usize = 10_240;

/// The stack lock's bucket and key, if the spec has a lock.
pub fn lock_object(spec: &Spec) -> Option<(String, String)> {
    spec.lock.as_ref().map(|l| (l.bucket.clone(), l.key.clone().unwrap_or_else(|| format!("reconciler/{}.lock", spec.name))))
}

/// The policy document for `purpose`.
pub fn document(spec: &Spec, purpose: Purpose) -> Value {
    // Beside the kinds' own reads: the facts the layout depends on and verify's reads.
    let reads: Vec<&'static str> = FACTS_READS.iter().chain(VERIFY_READS).copied().collect();
    // Only apply takes the lock; plan reads without it.
    let added: Vec<Value> = match (purpose, lock_object(spec)) {
        (Purpose::Apply, Some((bucket, key))) => vec![crate::engine::lock::iam_statement(&bucket, &key)],
        _ => vec![],
    };
    policy::document(&spec.name, &crate::resources::registry(), purpose, &reads, &added, spec.account_wide_reads)
}

/// How IAM counts a policy against its size limit: the compact JSON without whitespace.
pub fn inline_size(doc: &Value) -> usize {
    doc.to_string().chars().filter(|c| !c.is_whitespace()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_spec_s_apply_policy_fits_a_role_inline_with_room_to_spare() {
        let spec = crate::spec::load(&crate::spec::shipped("../specs/prod.yaml")).unwrap();
        let size = inline_size(&crate::resources::iam::canonical_policy(&document(&spec, Purpose::Apply)));
        assert!(size < INLINE_LIMIT, "{size}");
        assert!(inline_size(&document(&spec, Purpose::Plan)) < size);
    }

    /// The account-wide batch reads are granted, to plan and apply, only where the spec allows
    /// them; the fallbacks' reads are granted either way. Without the default in the spec, the
    /// carried spec (the drift-correction task's) is what it was before the setting existed.
    #[test]
    fn account_wide_reads_are_granted_only_where_the_spec_allows_them() {
        let text = std::fs::read_to_string(crate::spec::shipped("../specs/prod.yaml")).unwrap();
        let allowed = crate::spec::parse("prod.yaml", &text).unwrap();
        let denied = crate::spec::parse("prod.yaml", &format!("{text}\naccount_wide_reads: false\n")).unwrap();
        assert!(allowed.account_wide_reads && !denied.account_wide_reads);
        for purpose in [Purpose::Plan, Purpose::Apply] {
            let (with, without) = (document(&allowed, purpose).to_string(), document(&denied, purpose).to_string());
            for batch in ["iam:GetAccountAuthorizationDetails", "tag:GetResources"] {
                assert!(with.contains(batch) && !without.contains(batch), "{batch} in {purpose:?}");
            }
            for fallback in ["iam:ListRoles", "iam:GetRolePolicy", "logs:ListTagsForResource", "sqs:ListQueueTags"] {
                assert!(with.contains(fallback) && without.contains(fallback), "{fallback} in {purpose:?}");
            }
        }
        assert!(!crate::spec::to_carried(&allowed).contains("account_wide_reads"));
        assert!(crate::spec::to_carried(&denied).contains("\"account_wide_reads\":false"));
        for spec in [&allowed, &denied] {
            assert_eq!(&crate::spec::parse("carried", &crate::spec::to_carried(spec)).unwrap(), spec);
        }
    }

    /// Apply holds the lock: the lease and the destroyed mark beside it (`<key>.destroyed`),
    /// nothing else; plan takes no lock.
    #[test]
    fn the_lock_is_one_object_and_its_destroyed_mark_for_apply_only() {
        let spec = crate::spec::parse(
            "t.yaml",
            "name: st\nregion: us-east-1\nlock: {bucket: locks}\nnetwork:\n  vpc: {cidr: 10.0.0.0/16, azs: 2}\n",
        )
        .unwrap();
        let apply = document(&spec, Purpose::Apply);
        let st = apply["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == "HoldTheStackLock").unwrap();
        assert_eq!(st["Resource"], "arn:aws:s3:::locks/reconciler/st.lock*");
        assert_eq!(crate::engine::lock::tombstone("reconciler/s.lock"), "reconciler/s.lock.destroyed");
        let plan = document(&spec, Purpose::Plan).to_string();
        assert!(!plan.contains("s3:PutObject") && !plan.contains("HoldTheStackLock"), "plan takes no lock: {plan}");
    }
}
