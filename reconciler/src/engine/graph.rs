//! Dependency order for deletion, from what resources record about each other: an observed
//! resource depends on another when one of its field values is that resource's physical id or
//! one of its distinctive attributes, an ARN, URL or path (a route table lists its subnets, a
//! service names its task definition's ARN). Plain names are not matched: a service and a
//! task definition family may both be called after the stack without one depending on the other. Edges from the spec (references and `after`) are added where the spec
//! still has both ends. Nothing here depends on the order kinds are registered in.

use super::refs::references;
use super::{Desired, Observed};
use anyhow::anyhow;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn strings<'a>(v: &'a Value, out: &mut BTreeSet<&'a str>) {
    match v {
        Value::String(s) => {
            out.insert(s.as_str());
        }
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// For each of `items`, the indexes (into `items`) of the items it depends on.
pub fn dependencies(items: &[&Observed], desired: &[Desired]) -> Vec<BTreeSet<usize>> {
    let mut by_value: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, o) in items.iter().enumerate() {
        by_value.entry(o.physical_id.as_str()).or_default().insert(i);
        for a in o.attrs.values().filter(|a| a.contains(':') || a.contains('/')) {
            by_value.entry(a.as_str()).or_default().insert(i);
        }
    }
    let by_id: BTreeMap<(&str, &str), Vec<usize>> = items.iter().enumerate().fold(BTreeMap::new(), |mut m, (i, o)| {
        m.entry((o.kind, o.id.as_str())).or_insert_with(Vec::new).push(i);
        m
    });
    let by_logical: BTreeMap<&str, Vec<usize>> = items.iter().enumerate().fold(BTreeMap::new(), |mut m, (i, o)| {
        m.entry(o.id.as_str()).or_insert_with(Vec::new).push(i);
        m
    });
    items
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let mut vals = BTreeSet::new();
            // Tags are labels, not references.
            o.fields.iter().filter(|(k, _)| k.as_str() != "tags").for_each(|(_, v)| strings(v, &mut vals));
            let mut deps: BTreeSet<usize> = vals.iter().filter_map(|v| by_value.get(v)).flatten().copied().filter(|&j| j != i).collect();
            if let Some(d) = desired.iter().find(|d| d.kind == o.kind && d.id == o.id) {
                let mut spec_deps = BTreeSet::new();
                d.fields.values().for_each(|v| super::refs::references(v, &mut spec_deps));
                spec_deps.extend(d.after.iter().cloned());
                for dep in spec_deps {
                    deps.extend(by_logical.get(dep.as_str()).into_iter().flatten().copied().filter(|&j| j != i));
                }
            }
            // Duplicates of one logical id never order each other.
            let twins = by_id.get(&(o.kind, o.id.as_str())).cloned().unwrap_or_default();
            deps.retain(|j| !twins.contains(j));
            deps
        })
        .collect()
}

/// Waves of deletion: each wave holds the items nothing left depends on (dependents first).
/// A cycle (never expected) ends in one last wave with everything that remains.
pub fn deletion_waves(items: &[&Observed], desired: &[Desired]) -> Vec<Vec<usize>> {
    waves_of(&dependencies(items, desired))
}

/// [`deletion_waves`] from dependencies already computed ([`dependencies`]).
pub fn waves_of(deps: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    let mut left: BTreeSet<usize> = (0..deps.len()).collect();
    let mut waves = Vec::new();
    while !left.is_empty() {
        let wave: Vec<usize> = left.iter().copied().filter(|&i| !left.iter().any(|&j| j != i && deps[j].contains(&i))).collect();
        if wave.is_empty() {
            waves.push(left.iter().copied().collect());
            break;
        }
        for i in &wave {
            left.remove(i);
        }
        waves.push(wave);
    }
    waves
}

/// Those of `candidates` that use any of `used` (their fields name it, or the spec says so),
/// directly or through each other.
pub(super) fn users_among<'o>(used: &[&Observed], candidates: &[&'o Observed], desired: &[Desired]) -> Vec<&'o Observed> {
    if used.is_empty() || candidates.is_empty() {
        return Vec::new();
    }
    let mut all: Vec<&Observed> = used.to_vec();
    all.extend(candidates.iter().copied());
    let deps = dependencies(&all, desired);
    let mut reached: BTreeSet<usize> = (0..used.len()).collect();
    loop {
        let more: Vec<usize> =
            (used.len()..all.len()).filter(|j| !reached.contains(j) && deps[*j].iter().any(|d| reached.contains(d))).collect();
        if more.is_empty() {
            break;
        }
        reached.extend(more);
    }
    reached.into_iter().filter(|&j| j >= used.len()).map(|j| candidates[j - used.len()]).collect()
}

pub(super) fn deps_of(d: &Desired) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    for v in d.fields.values() {
        references(v, &mut deps);
    }
    deps.extend(d.after.iter().cloned());
    deps
}

/// Indexes of `desired` in dependency order (stable: input order among independent nodes).
pub(super) fn topo_order(desired: &[Desired], externals: &BTreeMap<String, String>) -> anyhow::Result<Vec<usize>> {
    let index: BTreeMap<&str, usize> = desired.iter().enumerate().map(|(i, d)| (d.id.as_str(), i)).collect();
    if index.len() != desired.len() {
        return Err(anyhow!("internal error: two desired resources share a logical id"));
    }
    let mut deps: Vec<BTreeSet<usize>> = Vec::with_capacity(desired.len());
    for d in desired {
        let mut set = BTreeSet::new();
        for dep in deps_of(d) {
            if externals.contains_key(&dep) {
                continue;
            }
            let j = *index.get(dep.as_str()).ok_or_else(|| anyhow!("internal error: `{}` depends on unknown `{dep}`", d.id))?;
            set.insert(j);
        }
        deps.push(set);
    }
    let mut order = Vec::with_capacity(desired.len());
    let mut placed = vec![false; desired.len()];
    while order.len() < desired.len() {
        let before = order.len();
        for i in 0..desired.len() {
            if !placed[i] && deps[i].iter().all(|&j| placed[j]) {
                placed[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            let stuck: Vec<&str> = (0..desired.len()).filter(|&i| !placed[i]).map(|i| desired[i].id.as_str()).collect();
            return Err(anyhow!("internal error: dependency cycle among {stuck:?}"));
        }
    }
    Ok(order)
}

/// Logical ids in the order apply creates them (dependencies first).
pub fn creation_order(desired: &[Desired], externals: &BTreeMap<String, String>) -> anyhow::Result<Vec<String>> {
    Ok(topo_order(desired, externals)?.into_iter().map(|i| desired[i].id.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{reference, Attrs, Status};
    use serde_json::json;

    fn obs(kind: &'static str, id: &str, phys: &str, attrs: &[(&str, &str)], fields: Value) -> Observed {
        Observed {
            kind,
            id: id.into(),
            physical_id: phys.into(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Attrs>(),
            fields: fields.as_object().unwrap().clone(),
            status: Status::Ready,
            created: None,
        }
    }

    #[test]
    fn dependents_go_first_by_recorded_references() {
        let items = [
            obs("x:cluster", "cluster", "arn:cluster", &[("name", "s")], json!({})),
            obs("x:role", "role", "r", &[("arn", "arn:role")], json!({"tags": {"note": "arn:cluster"}})),
            obs("x:taskdef", "td", "arn:td:1", &[("family", "s")], json!({"role": "arn:role", "family": "s"})),
            obs(
                "x:service",
                "svc",
                "arn:svc",
                &[("resource_id", "service/c/s"), ("name", "s")],
                json!({"cluster": "arn:cluster", "td": "arn:td:1", "name": "s"}),
            ),
            obs("x:target", "target", "service/c/s", &[], json!({"service": "service/c/s"})),
        ];
        let refs: Vec<&Observed> = items.iter().collect();
        let waves = deletion_waves(&refs, &[]);
        let names: Vec<Vec<&str>> = waves.iter().map(|w| w.iter().map(|&i| items[i].id.as_str()).collect()).collect();
        // Tags and plain names never make an edge (the service, the family and the cluster's
        // name are all `s`): the role only goes after the task definition that uses it.
        assert_eq!(names, vec![vec!["target"], vec!["svc"], vec!["cluster", "td"], vec!["role"]]);
    }

    #[test]
    fn spec_edges_count_where_nothing_is_recorded() {
        let items = [obs("x:gateway", "igw", "igw-1", &[], json!({})), obs("x:nat", "nat", "nat-1", &[], json!({}))];
        let desired = vec![Desired { kind: "x:nat", id: "nat".into(), fields: Default::default(), after: vec!["igw".into()] }];
        let refs: Vec<&Observed> = items.iter().collect();
        assert_eq!(deletion_waves(&refs, &desired), vec![vec![1], vec![0]]);
        let d2 = vec![Desired {
            kind: "x:nat",
            id: "nat".into(),
            fields: json!({"x": reference("igw")}).as_object().unwrap().clone(),
            after: vec![],
        }];
        assert_eq!(deletion_waves(&refs, &d2), vec![vec![1], vec![0]]);
        assert_eq!(deletion_waves(&refs, &[]), vec![vec![0, 1]], "independent: one wave");
    }

    #[test]
    fn orders_by_references() {
        let d = vec![
            crate::engine::testing::desired("b", "child", json!({"parent": reference("root")})),
            crate::engine::testing::desired("a", "root", json!({})),
        ];
        assert_eq!(topo_order(&d, &BTreeMap::new()).unwrap(), vec![1, 0]);
        let cyc = vec![
            crate::engine::testing::desired("a", "x", json!({"p": reference("y")})),
            crate::engine::testing::desired("a", "y", json!({"p": reference("x")})),
        ];
        assert!(topo_order(&cyc, &BTreeMap::new()).unwrap_err().to_string().contains("cycle"));
        let dangling = vec![crate::engine::testing::desired("a", "x", json!({"p": reference("nope")}))];
        assert!(topo_order(&dangling, &BTreeMap::new()).is_err());
        assert!(topo_order(&dangling, &BTreeMap::from([("nope".into(), "vpc-1".into())])).is_ok());
    }
}
