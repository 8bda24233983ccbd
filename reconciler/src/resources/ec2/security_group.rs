//! `ec2:security-group` — rules are a set. A rule is written `PROTOCOL PORTS PEER`
//! (`tcp 8080 10.0.0.0/16`, `all all 0.0.0.0/0`, `tcp 443-444 sg-…`); descriptions are not
//! part of a rule's identity. Convergence authorizes the missing rules and revokes the extra
//! ones, never revoke-all-then-reauthorize (which would open an outage window).

use super::{
    call_failed, ec2, iam_arn, owned, stack_filter, sync_tags, tag_on_create, tag_spec, typed, untyped, wait_until_no_interface_in,
};
use crate::engine::ownership::TagMap;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed, Replacement};
use crate::engine::{Managed, Ref, Set};
use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, Ipv6Range, ResourceType, SecurityGroupRule, UserIdGroupPair};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub struct SecurityGroup;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupFields {
    pub group_name: String,
    /// Set on create, never compared (EC2 cannot change it).
    pub description: Managed<String>,
    pub vpc: Ref,
    /// Rules as `PROTOCOL PORTS PEER` (`tcp 8080 10.0.0.0/16`); sets.
    pub ingress: Set<String>,
    pub egress: Set<String>,
    pub tags: TagMap,
}

/// (ingress, egress) rule texts per group id.
type Rules = BTreeMap<String, (Vec<String>, Vec<String>)>;

/// Canonical text of one observed rule.
pub fn rule_text(r: &SecurityGroupRule) -> Option<String> {
    let proto = match r.ip_protocol()? {
        "-1" => "all".to_string(),
        p => p.to_string(),
    };
    let (from, to) = (r.from_port().unwrap_or(-1), r.to_port().unwrap_or(-1));
    let ports = if proto == "all" || (from == -1 && to == -1) || (from == 0 && to == 65535) {
        "all".to_string()
    } else if from == to {
        from.to_string()
    } else {
        format!("{from}-{to}")
    };
    let peer = r.cidr_ipv4().or(r.cidr_ipv6()).or(r.prefix_list_id()).or(r.referenced_group_info().and_then(|g| g.group_id()))?;
    Some(format!("{proto} {ports} {peer}"))
}

/// The API form of a rule text.
pub fn permission(rule: &str) -> anyhow::Result<IpPermission> {
    let bad = || anyhow::anyhow!("internal error: malformed rule `{rule}` (want `PROTOCOL PORTS PEER`)");
    let parts: Vec<&str> = rule.split_whitespace().collect();
    let [proto, ports, peer] = parts[..] else { return Err(bad()) };
    let mut p = IpPermission::builder().ip_protocol(if proto == "all" { "-1" } else { proto });
    if proto != "all" {
        let (from, to) = match ports {
            "all" => (0, 65535),
            _ => match ports.split_once('-') {
                Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
                None => {
                    let n: i32 = ports.parse().map_err(|_| bad())?;
                    (n, n)
                }
            },
        };
        p = p.from_port(from).to_port(to);
    }
    p = if peer.starts_with("sg-") {
        p.user_id_group_pairs(UserIdGroupPair::builder().group_id(peer).build())
    } else if peer.contains(':') {
        p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(peer).build())
    } else {
        p.ip_ranges(IpRange::builder().cidr_ip(peer).build())
    };
    Ok(p.build())
}

/// The rules of one side of a field change (a set of rule texts).
fn rules_of(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// (ingress, egress) rule texts per group id, in one DescribeSecurityGroupRules call.
async fn rules(ctx: &Ctx, group_ids: &[String]) -> anyhow::Result<Rules> {
    let mut out = Rules::new();
    if group_ids.is_empty() {
        return Ok(out);
    }
    let filter = Filter::builder().name("group-id").set_values(Some(group_ids.to_vec())).build();
    let mut pages = ec2(ctx).describe_security_group_rules().filters(filter).into_paginator().send();
    while let Some(page) = pages.next().await {
        for r in page.map_err(call_failed("DescribeSecurityGroupRules"))?.security_group_rules() {
            let (Some(gid), Some(text)) = (r.group_id(), rule_text(r)) else { continue };
            let e = out.entry(gid.to_string()).or_default();
            if r.is_egress() == Some(true) { &mut e.1 } else { &mut e.0 }.push(text);
        }
    }
    Ok(out)
}

/// Authorizes what `want` has and `have` lacks, then revokes what `have` has and `want` lacks.
async fn converge_rules(ctx: &Ctx, sg: &str, egress: bool, have: &[String], want: &[String]) -> anyhow::Result<()> {
    let add: Vec<IpPermission> = want.iter().filter(|r| !have.contains(r)).map(|r| permission(r)).collect::<anyhow::Result<_>>()?;
    let remove: Vec<IpPermission> = have.iter().filter(|r| !want.contains(r)).map(|r| permission(r)).collect::<anyhow::Result<_>>()?;
    if !add.is_empty() {
        if egress {
            ec2(ctx)
                .authorize_security_group_egress()
                .group_id(sg)
                .set_ip_permissions(Some(add))
                .send()
                .await
                .map_err(call_failed("AuthorizeSecurityGroupEgress"))?;
        } else {
            ec2(ctx)
                .authorize_security_group_ingress()
                .group_id(sg)
                .set_ip_permissions(Some(add))
                .send()
                .await
                .map_err(call_failed("AuthorizeSecurityGroupIngress"))?;
        }
    }
    if !remove.is_empty() {
        if egress {
            ec2(ctx)
                .revoke_security_group_egress()
                .group_id(sg)
                .set_ip_permissions(Some(remove))
                .send()
                .await
                .map_err(call_failed("RevokeSecurityGroupEgress"))?;
        } else {
            ec2(ctx)
                .revoke_security_group_ingress()
                .group_id(sg)
                .set_ip_permissions(Some(remove))
                .send()
                .await
                .map_err(call_failed("RevokeSecurityGroupIngress"))?;
        }
    }
    Ok(())
}

async fn converge_all(ctx: &Ctx, sg: &str, f: &SecurityGroupFields) -> anyhow::Result<()> {
    let live = rules(ctx, &[sg.to_string()]).await?;
    let (ing, eg) = live.get(sg).cloned().unwrap_or_default();
    converge_rules(ctx, sg, false, &ing, &f.ingress).await?;
    converge_rules(ctx, sg, true, &eg, &f.egress).await
}

impl Kind for SecurityGroup {
    fn name(&self) -> &'static str {
        "ec2:security-group"
    }

    type Typed = SecurityGroupFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["group_name", "vpc"]
    }

    /// A group is replaced only for a new name or a new VPC, and names are unique per VPC: the
    /// successor never clashes with the old group. So it is created first, the service and the
    /// VPC link are moved to it, and the old group (no longer in use) is deleted last, instead
    /// of failing with DependencyViolation while the old one is still attached.
    fn replacement(&self) -> Replacement {
        Replacement::CreateBeforeDestroy
    }

    async fn observe(&self, ctx: &Ctx, _wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let mut pages = ec2(ctx).describe_security_groups().filters(stack_filter(ctx)).into_paginator().send();
        let mut groups = Vec::new();
        while let Some(page) = pages.next().await {
            for g in page.map_err(call_failed("DescribeSecurityGroups"))?.security_groups() {
                let (Some((id, tags)), Some(gid)) = (owned(ctx, g.tags()), g.group_id()) else { continue };
                let fields = SecurityGroupFields {
                    group_name: g.group_name().unwrap_or_default().to_string(),
                    description: g.description().unwrap_or_default().to_string().into(),
                    vpc: g.vpc_id().unwrap_or_default().to_string().into(),
                    ingress: Set::default(),
                    egress: Set::default(),
                    tags,
                };
                groups.push((id, gid.to_string(), fields));
            }
        }
        let ids: Vec<String> = groups.iter().map(|(_, gid, _)| gid.clone()).collect();
        let mut all_rules = rules(ctx, &ids).await?;
        Ok(groups
            .into_iter()
            .map(|(id, gid, mut fields)| {
                let (ing, eg) = all_rules.remove(&gid).unwrap_or_default();
                (fields.ingress, fields.egress) = (Set::from(ing), Set::from(eg));
                Observed::new(self.name(), id, gid, untyped(&fields))
            })
            .collect())
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: SecurityGroupFields = typed(self.name(), fields)?;
        let out = ec2(ctx)
            .create_security_group()
            .group_name(&f.group_name)
            .description(f.description.as_str())
            .vpc_id(&f.vpc)
            .tag_specifications(tag_spec(ResourceType::SecurityGroup, &f.tags))
            .send()
            .await
            .map_err(call_failed("CreateSecurityGroup"))?;
        let sg = out.group_id().ok_or_else(|| anyhow::anyhow!("CreateSecurityGroup returned no id"))?.to_string();
        // AWS adds a default allow-all egress rule; converging from the live rules removes
        // it where the spec does not want it.
        converge_all(ctx, &sg, &f).await?;
        Ok(Identity::id(sg))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, _fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        for (field, egress) in [("ingress", false), ("egress", true)] {
            if let Some(c) = changes.iter().find(|c| c.field == field) {
                converge_rules(ctx, &live.physical_id, egress, &rules_of(c.before.as_ref()), &rules_of(Some(&c.after))).await?;
            }
        }
        sync_tags(ctx, &live.physical_id, changes).await?;
        Ok(None)
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            // DescribeNetworkInterfaces: a group is deleted once no interface is in it.
            read: vec!["ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules", "ec2:DescribeNetworkInterfaces"],
            create: vec!["ec2:CreateSecurityGroup"],
            change: vec![
                "ec2:AuthorizeSecurityGroupIngress",
                "ec2:AuthorizeSecurityGroupEgress",
                "ec2:RevokeSecurityGroupIngress",
                "ec2:RevokeSecurityGroupEgress",
                "ec2:DeleteSecurityGroup",
                "ec2:CreateTags",
                "ec2:DeleteTags",
            ],
            // Created in a VPC. Rules are authorised on the group (tagged: the condition above
            // applies) and on the rule, which has no tags when it is authorised (nor does AWS's
            // default egress rule): the rule ARNs get a statement of their own, unconditioned.
            arns: vec![iam_arn("security-group"), iam_arn("vpc")],
            extra: vec![tag_on_create(stack), rules_statement()],
            ..Default::default()
        }
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        wait_until_no_interface_in(ctx, "group-id", "security group", &live.physical_id).await?;
        ec2(ctx).delete_security_group().group_id(&live.physical_id).send().await.map_err(call_failed("DeleteSecurityGroup"))?;
        Ok(())
    }
}

/// Rule changes on the rule ARNs (see `iam` above): the group is what scopes them to the stack.
fn rules_statement() -> serde_json::Value {
    serde_json::json!({
        "Sid": "SecurityGroupRulesOfTheStacksGroups",
        "Effect": "Allow",
        "Action": [
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupEgress",
            "ec2:RevokeSecurityGroupIngress",
        ],
        "Resource": iam_arn("security-group-rule"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What DescribeSecurityGroupRules returns for a rule authorized as `p`: one rule per
    /// peer, the protocol as sent, ports -1 for protocol `-1` (AWS ignores any sent).
    fn aws_echo(p: &IpPermission) -> SecurityGroupRule {
        let all = p.ip_protocol() == Some("-1");
        SecurityGroupRule::builder()
            .set_ip_protocol(p.ip_protocol().map(String::from))
            .from_port(if all { -1 } else { p.from_port().unwrap_or(-1) })
            .to_port(if all { -1 } else { p.to_port().unwrap_or(-1) })
            .set_cidr_ipv4(p.ip_ranges().first().and_then(|r| r.cidr_ip()).map(String::from))
            .set_cidr_ipv6(p.ipv6_ranges().first().and_then(|r| r.cidr_ipv6()).map(String::from))
            .set_referenced_group_info(
                p.user_id_group_pairs()
                    .first()
                    .map(|g| aws_sdk_ec2::types::ReferencedSecurityGroup::builder().set_group_id(g.group_id().map(String::from)).build()),
            )
            .build()
    }

    #[test]
    fn rule_text_round_trips_through_the_api_form() {
        for text in ["tcp 8080 10.0.0.0/16", "all all 0.0.0.0/0", "tcp 443-444 sg-123", "udp 53 ::/0"] {
            let r = aws_echo(&permission(text).unwrap());
            assert_eq!(rule_text(&r).as_deref(), Some(text));
        }
        assert!(permission("tcp 8080").is_err());
        assert!(permission("tcp x 10.0.0.0/16").is_err());
    }

    /// Rule texts in the language desired state writes: protocol, ports (one, a range, `all`),
    /// a peer (IPv4 or IPv6 CIDR, a security group).
    fn rule() -> impl Strategy<Value = String> {
        let ports = prop_oneof![
            Just("all".to_string()),
            (0..=65535i32).prop_map(|n| n.to_string()),
            (0..65535i32, 1..=65535i32).prop_filter_map("a range", |(a, b)| (a < b && (a, b) != (0, 65535)).then(|| format!("{a}-{b}"))),
        ];
        let peer = prop_oneof![
            (0..=255u8, 0..=255u8, 8..=32u8).prop_map(|(a, b, n)| format!("{a}.{b}.0.0/{n}")),
            (0..=0xffffu32, 16..=128u8).prop_map(|(a, n)| format!("2001:{a:x}::/{n}")),
            "[0-9a-f]{8,17}".prop_map(|h| format!("sg-{h}")),
        ];
        (prop_oneof![Just("tcp"), Just("udp"), Just("all")], ports, peer).prop_map(|(proto, ports, peer)| {
            if proto == "all" {
                format!("all all {peer}")
            } else {
                format!("{proto} {ports} {peer}")
            }
        })
    }

    proptest! {
        /// #23 §2: a rule as sent and as AWS describes it back are the same text (no drift
        /// from the round trip), for every rule desired state can write.
        #[test]
        fn every_rule_reads_back_as_written(text in rule()) {
            let p = permission(&text).unwrap();
            prop_assert_eq!(rule_text(&aws_echo(&p)), Some(text));
        }
    }
}
