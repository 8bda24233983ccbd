//! The fake cloud the property test runs the engine against: resources with owners and
//! references, AWS's rules (a create or update naming something missing is refused; deleting
//! something in use is `DependencyViolation`), injected faults, and the fake kinds over it.

use crate::engine::retry::{AwsError, ErrorClass};
use crate::engine::{Ctx, Desired, DynKind, FieldChange, Fields, Identity, Kind, Observed, Replacement};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub(super) const STACK: &str = "prop";

/// One resource in the fake cloud. `owner` is (stack, logical id), from its tags.
#[derive(Debug, Clone)]
pub(super) struct Res {
    pub(super) kind: &'static str,
    pub(super) phys: String,
    pub(super) owner: Option<(String, String)>,
    pub(super) fields: Fields,
    pub(super) created: i64,
    pub(super) alive: bool,
    /// Listed by observe: an older revision of a kind that makes one per update is alive (what
    /// uses it keeps working) but no longer listed, as ECS lists a family's latest revision.
    pub(super) listed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// Refused, nothing happened (validation, a limit).
    Refused,
    /// A 503 before anything happened.
    Unavailable,
    /// The change was made; its answer was lost (a 5xx or a dropped connection).
    LostAnswer,
    /// The change was made; then the process died.
    Kill,
}

#[derive(Default)]
pub(super) struct Cloud {
    pub(super) res: Vec<Res>,
    pub(super) next: u64,
    /// Mutations in the current run, and the faults injected by their number (from 1).
    pub(super) mutations: u64,
    pub(super) faults: BTreeMap<u64, Fault>,
    pub(super) kill: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) killed: bool,
    /// What the engine did, in order (for the failure message).
    pub(super) log: Vec<String>,
    /// This run's changes that took effect: ("create", logical id) and ("delete", AWS id).
    pub(super) touched: Vec<(&'static str, String)>,
    pub(super) violations: Vec<String>,
}

impl Cloud {
    pub(super) fn new_phys(&mut self, kind: &str) -> String {
        self.next += 1;
        format!("{kind}-{:04}", self.next)
    }
    pub(super) fn alive(&self, phys: &str) -> bool {
        self.res.iter().any(|r| r.alive && r.phys == phys)
    }
    /// Alive resources (anyone's) whose fields name `phys`.
    pub(super) fn users_of(&self, phys: &str) -> Vec<String> {
        self.res.iter().filter(|r| r.alive && r.fields.values().any(|v| v.as_str() == Some(phys))).map(|r| r.phys.clone()).collect()
    }
    pub(super) fn owned_alive(&self) -> impl Iterator<Item = &Res> {
        self.res.iter().filter(|r| r.alive && r.listed && r.owner.as_ref().is_some_and(|(s, _)| s == STACK))
    }
}

pub(super) type Shared = Arc<Mutex<Cloud>>;

pub(super) fn aws(call: &str, class: ErrorClass, code: &str, msg: &str) -> anyhow::Error {
    anyhow::Error::new(AwsError::new(call, Some(code.into()), msg.into(), class))
}

/// A kind whose reference fields (`refs`) name other resources by their AWS id.
pub(super) struct CloudKind {
    pub(super) name: &'static str,
    pub(super) refs: &'static [&'static str],
    pub(super) replace_on: &'static [&'static str],
    pub(super) replacement: Replacement,
    /// Each update registers a new revision with a new AWS id (a task definition).
    pub(super) revisions: bool,
    pub(super) cloud: Shared,
}

impl CloudKind {
    /// The fields' references must name live resources (AWS refuses otherwise).
    pub(super) fn check_refs(&self, c: &mut Cloud, call: &str, fields: &Fields) -> anyhow::Result<()> {
        for f in self.refs {
            let Some(target) = fields.get(*f).and_then(Value::as_str) else { continue };
            if !c.alive(target) {
                c.violations.push(format!("{call} {} names `{f}` = {target}, which is not there", self.name));
                return Err(aws(call, ErrorClass::Final, "InvalidParameterValue", "the referenced resource does not exist"));
            }
        }
        Ok(())
    }

    /// One mutation, with the fault injected for its number in this run.
    pub(super) async fn mutate<T: Send>(&self, call: String, op: impl FnOnce(&mut Cloud) -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
        match self.mutate_now(&call, op) {
            // The process is dead: nothing answers.
            None => std::future::pending().await,
            Some((Some(Fault::LostAnswer), Ok(_))) => {
                Err(aws(&call, ErrorClass::Retryable, "InternalError", "injected: the answer was lost"))
            }
            Some((_, result)) => result,
        }
    }

    /// The mutation's effect (none after a kill: `None`), and its fault.
    pub(super) fn mutate_now<T>(
        &self,
        call: &str,
        op: impl FnOnce(&mut Cloud) -> anyhow::Result<T>,
    ) -> Option<(Option<Fault>, anyhow::Result<T>)> {
        let mut c = self.cloud.lock().unwrap();
        if c.killed {
            return None;
        }
        c.mutations += 1;
        let fault = c.faults.get(&c.mutations).copied();
        let result = match fault {
            Some(Fault::Refused) => Err(aws(call, ErrorClass::Final, "ValidationException", "injected: refused")),
            Some(Fault::Unavailable) => {
                Err(aws(call, ErrorClass::Retryable, "ServiceUnavailable", "injected: 503 before anything happened"))
            }
            _ => op(&mut c),
        };
        let how = fault.map(|f| format!(" then {f:?}")).unwrap_or_default();
        c.log.push(format!("{call} {}{how}", if result.is_ok() { "ok" } else { "failed" }));
        if fault == Some(Fault::Kill) {
            c.killed = true;
            if let Some(kill) = c.kill.take() {
                let _ = kill.send(());
            }
            return None;
        }
        Some((fault, result))
    }
}

impl Kind for CloudKind {
    fn name(&self) -> &'static str {
        self.name
    }
    /// Untyped: the fake kinds take any fields.
    type Typed = Fields;
    fn replace_on(&self) -> &'static [&'static str] {
        self.replace_on
    }
    fn replacement(&self) -> Replacement {
        self.replacement
    }
    fn updates_yield_new_identity(&self) -> bool {
        self.revisions
    }
    async fn observe(&self, _: &Ctx, _: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let c = self.cloud.lock().unwrap();
        Ok(c.owned_alive()
            .filter(|r| r.kind == self.name)
            .map(|r| {
                let id = r.owner.as_ref().map(|(_, id)| id.clone()).unwrap_or_default();
                Observed { created: Some(r.created), ..Observed::new(self.name, id, r.phys.clone(), r.fields.clone()) }
            })
            .collect())
    }
    async fn create(&self, _: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        self.mutate(format!("create {id}"), move |c| {
            self.check_refs(c, "create", fields)?;
            let phys = c.new_phys(self.name);
            let created = c.next as i64;
            c.res.push(Res {
                kind: self.name,
                phys: phys.clone(),
                owner: Some((STACK.into(), id.into())),
                fields: fields.clone(),
                created,
                alive: true,
                listed: true,
            });
            c.touched.push(("create", id.to_string()));
            Ok(Identity::id(phys))
        })
        .await
    }
    async fn update(&self, _: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        self.mutate(format!("update {} [{}]", live.id, live.physical_id), move |c| {
            if let Some(f) = changes.iter().find(|ch| self.replace_on.contains(&ch.field.as_str())) {
                c.violations.push(format!("update {} [{}] changes `{}`, which cannot change in place", live.id, live.physical_id, f.field));
            }
            self.check_refs(c, "update", fields)?;
            let Some(i) = c.res.iter().position(|r| r.alive && r.phys == live.physical_id) else {
                c.violations.push(format!("update {} [{}]: it is not there", live.id, live.physical_id));
                return Err(aws("update", ErrorClass::Gone, "NotFound", "no such resource"));
            };
            if c.res[i].owner.as_ref().map(|(s, _)| s.as_str()) != Some(STACK) {
                c.violations.push(format!("update {} [{}]: not the stack's", live.id, live.physical_id));
            }
            if self.revisions {
                let mut next = c.res[i].clone();
                c.res[i].listed = false;
                next.fields.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                next.phys = c.new_phys(self.name);
                next.created = c.next as i64;
                let phys = next.phys.clone();
                c.res.push(next);
                return Ok(Some(Identity::id(phys)));
            }
            for (k, v) in fields {
                c.res[i].fields.insert(k.clone(), v.clone());
            }
            Ok(None)
        })
        .await
    }
    async fn delete(&self, _: &Ctx, live: &Observed) -> anyhow::Result<()> {
        self.mutate(format!("delete {} [{}]", live.id, live.physical_id), move |c| {
            let Some(i) = c.res.iter().position(|r| r.alive && r.phys == live.physical_id) else {
                return Err(aws("delete", ErrorClass::Gone, "NotFound", "no such resource"));
            };
            if c.res[i].owner.as_ref().map(|(s, _)| s.as_str()) != Some(STACK) {
                c.violations.push(format!("delete {} [{}]: not the stack's", live.id, live.physical_id));
            }
            let users = c.users_of(&live.physical_id);
            if !users.is_empty() {
                c.violations.push(format!("delete {} [{}] while {users:?} use it", live.id, live.physical_id));
                return Err(aws("delete", ErrorClass::Conflict, "DependencyViolation", "in use"));
            }
            c.res[i].alive = false;
            c.touched.push(("delete", live.physical_id.clone()));
            Ok(())
        })
        .await
    }
    fn iam(&self, _: &str) -> crate::engine::IamActions {
        crate::engine::IamActions::default()
    }
}

/// A network (its CIDR cannot change in place), subnets in it, apps in a subnet
/// (replaced create-before-destroy), edges that point at an app and follow it in place; apart,
/// revisions (a task definition: each update a new AWS id) and services that follow the latest.
pub(super) fn kinds(cloud: &Shared) -> Vec<Box<dyn DynKind>> {
    let kind = |name, refs, replace_on, replacement, revisions| {
        Box::new(CloudKind { name, refs, replace_on, replacement, revisions, cloud: cloud.clone() }) as Box<dyn DynKind>
    };
    vec![
        kind("net", &[], &["cidr"], Replacement::DeleteBeforeCreate, false),
        kind("sub", &["net"], &["net"], Replacement::DeleteBeforeCreate, false),
        kind("app", &["sub"], &["sub", "flavor"], Replacement::CreateBeforeDestroy, false),
        kind("edge", &["app"], &[], Replacement::DeleteBeforeCreate, false),
        kind("rev", &[], &[], Replacement::DeleteBeforeCreate, true),
        kind("svc", &["def"], &[], Replacement::DeleteBeforeCreate, false),
    ]
}
