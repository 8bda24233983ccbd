//! What an apply or a destroy spent its time on: when each resource's step started and ended,
//! and the chain of steps that set the wall time (the critical path): from the step that ended
//! last, back through the prerequisite it waited for longest, to one that waited for nothing.
//! Printed at the end of the command, so a slow run says which resources made it slow.

use std::time::{Duration, Instant};

pub struct Step {
    pub kind: &'static str,
    pub id: String,
    pub start: Duration,
    pub end: Duration,
    /// Steps (indexes) that had to end before this one could start.
    pub after: Vec<usize>,
}

pub struct Timeline {
    origin: Instant,
    pub steps: Vec<Step>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline { origin: Instant::now(), steps: Vec::new() }
    }
}

impl Timeline {
    /// Records a step that ran from `started` until now; returns its index.
    pub fn record(&mut self, kind: &'static str, id: &str, started: Instant, after: Vec<usize>) -> usize {
        let start = started.saturating_duration_since(self.origin);
        self.steps.push(Step { kind, id: id.to_string(), start, end: self.origin.elapsed().max(start), after });
        self.steps.len() - 1
    }

    /// The critical path, first step first.
    pub fn critical_path(&self) -> Vec<usize> {
        let Some(mut at) = (0..self.steps.len()).max_by_key(|&i| self.steps[i].end) else { return Vec::new() };
        let mut path = vec![at];
        while let Some(&before) = self.steps[at].after.iter().filter(|&&p| p < self.steps.len()).max_by_key(|&&p| self.steps[p].end) {
            if path.contains(&before) {
                break; // never expected: prerequisites point backwards in time
            }
            path.push(before);
            at = before;
        }
        path.reverse();
        path
    }

    /// One line: the critical path's own time (the sum of its steps), how long all the steps
    /// took from the first start to the last end, and the chain. `None` with no step.
    pub fn summary(&self) -> Option<String> {
        let path = self.critical_path();
        let first = self.steps.iter().map(|s| s.start).min()?;
        let last = self.steps.iter().map(|s| s.end).max()?;
        let own: Duration = path.iter().map(|&i| self.steps[i].end - self.steps[i].start).sum();
        let chain: Vec<String> =
            path.iter().map(|&i| &self.steps[i]).map(|s| format!("{} {} {:.2} s", s.kind, s.id, (s.end - s.start).as_secs_f64())).collect();
        Some(format!(
            "critical path {:.2} s of the {:.2} s the {} steps took: {}",
            own.as_secs_f64(),
            (last - first).as_secs_f64(),
            self.steps.len(),
            chain.join(" → ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, start: u64, end: u64, after: Vec<usize>) -> Step {
        Step { kind: "k", id: id.into(), start: Duration::from_millis(start), end: Duration::from_millis(end), after }
    }

    #[test]
    fn the_path_follows_the_prerequisite_that_ended_last() {
        let t = Timeline {
            origin: Instant::now(),
            steps: vec![
                step("vpc", 0, 100, vec![]),
                step("subnet", 100, 200, vec![0]),
                step("nat", 200, 1700, vec![1]),
                step("group", 100, 150, vec![0]),
                step("route", 1700, 1800, vec![2, 1]),
                step("service", 1800, 2500, vec![4, 3]),
                step("log", 0, 50, vec![]),
            ],
        };
        let names: Vec<&str> = t.critical_path().iter().map(|&i| t.steps[i].id.as_str()).collect();
        assert_eq!(names, ["vpc", "subnet", "nat", "route", "service"]);
        let line = t.summary().unwrap();
        assert!(line.starts_with("critical path 2.50 s of the 2.50 s the 7 steps took: k vpc 0.10 s → k subnet"), "{line}");
    }

    #[test]
    fn gaps_between_steps_are_not_on_the_path() {
        // The service started 300 ms after its prerequisite ended (say, the scheduler was
        // busy): the path's own time leaves that out, the span keeps it.
        let t = Timeline { origin: Instant::now(), steps: vec![step("a", 0, 200, vec![]), step("b", 500, 1000, vec![0])] };
        assert!(t.summary().unwrap().starts_with("critical path 0.70 s of the 1.00 s the 2 steps took"));
        assert_eq!(Timeline::default().summary(), None);
    }
}
