//! What a plan says, as data: per resource an action, its field-level changes and their
//! cause. A leaf: the engine computes and executes plans, `plan/` renders and prices them,
//! `log` records corrections; none of them is imported here.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

/// One field's difference: `before` is `None` when the field is missing live.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<Value>,
    pub after: Value,
}

#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct Plan {
    pub stack: String,
    pub resources: Vec<ResourcePlan>,
    /// Things the user should know that are not changes (e.g. sections not reconciled yet).
    pub notes: Vec<String>,
    /// Digest of everything the plan was computed from (spec, live facts, observed resources):
    /// a saved plan is applied only while this still matches.
    #[serde(default)]
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct ResourcePlan {
    pub kind: &'static str,
    pub id: String,
    pub physical_id: Option<String>,
    #[serde(flatten)]
    pub action: Action,
    pub changes: Vec<FieldChange>,
    /// Why an update or replacement is needed, where it can be told (drift attribution):
    /// `None` for creations, deletions and no-ops.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cause: Option<Cause>,
    /// With cause `cascade`: the dependency (`kind id`) whose replacement forces this change
    /// (its own line says why it is replaced).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub follows: Option<String>,
}

/// Who made the difference an update or replacement corrects. Told from the
/// `reconciler:applied` tag: the hash of the desired fields the resource was last converged to.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The spec still asks for what was last applied: the resource was changed outside it.
    Drift,
    /// The spec asks for something else than what was last applied.
    SpecChanged,
    /// Not told: the kind cannot carry tags, or the resource has no `reconciler:applied` tag yet.
    Unknown,
    /// Forced by the replacement of something it depends on (`follows` names it): every
    /// difference is a reference to the new one, known only after apply.
    Cascade,
}

impl Cause {
    pub fn describe(self) -> &'static str {
        match self {
            Cause::Drift => "drift: changed outside the spec",
            Cause::SpecChanged => "spec changed",
            Cause::Unknown => "cause unknown",
            Cause::Cascade => "follows a replacement",
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Replace {
        reason: String,
    },
    Delete {
        reason: String,
    },
    /// Left the spec (or destroyed) with `deletion_policy: retain`: stays in AWS, unmanaged.
    Retain {
        reason: String,
    },
}

/// The reason given for deleting a duplicate left by an interrupted create: cleanup, not a
/// destructive change.
pub const DUPLICATE: &str = "duplicate of the same logical id (left by an interrupted run)";

/// The reason given for deleting a duplicate that only what leaves the spec or is replaced
/// still uses: it goes after them, and is held back with them in an unattended run.
pub const DUPLICATE_IN_USE: &str = "duplicate of the same logical id, used only by what this run deletes or replaces (deleted after it)";

/// The reason given for a resource found on its way out (a NAT gateway `deleting`, an ECS
/// service `DRAINING`): nothing is deleted, the run waits until it is gone.
pub const LEAVING: &str = "still being deleted (by an earlier run or by AWS): waited for until it is gone";

impl Action {
    /// Replacements and deletions (pruning, retaining) lose or move something that exists;
    /// deleting a duplicate of a logical id that nothing keeps using is cleanup
    /// ([`DUPLICATE`]; one whose users go or are replaced, [`DUPLICATE_IN_USE`], goes with
    /// them), and waiting for what is already being deleted changes nothing.
    pub fn is_destructive(&self) -> bool {
        match self {
            Action::Replace { .. } | Action::Retain { .. } => true,
            Action::Delete { reason } => reason != DUPLICATE && reason != LEAVING,
            Action::NoOp | Action::Create | Action::Update => false,
        }
    }
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.resources.iter().any(|r| r.action != Action::NoOp)
    }

    /// The destructive steps (see [`Action::is_destructive`]).
    pub fn destructive(&self) -> Vec<&ResourcePlan> {
        self.resources.iter().filter(|r| r.action.is_destructive()).collect()
    }

    pub fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
        self.resources.iter().filter(|r| pred(&r.action)).count()
    }
}
