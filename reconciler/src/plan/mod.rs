//! A plan is a value: per resource an action and its field-level changes. Computed once by
//! the engine; rendered as text or JSON here; executed by `engine::apply`.

mod render;

pub use render::{render_json, render_markdown, render_text};

use crate::engine::FieldChange;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    pub stack: String,
    pub resources: Vec<ResourcePlan>,
    /// Things the user should know that are not changes (e.g. sections not reconciled yet).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResourcePlan {
    pub kind: &'static str,
    pub id: String,
    pub physical_id: Option<String>,
    #[serde(flatten)]
    pub action: Action,
    pub changes: Vec<FieldChange>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Replace { reason: String },
    Delete { reason: String },
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.resources.iter().any(|r| r.action != Action::NoOp)
    }

    pub fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
        self.resources.iter().filter(|r| pred(&r.action)).count()
    }
}
