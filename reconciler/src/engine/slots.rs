//! The bound on steps at work at once (`Settings::max_concurrency`, `--concurrency`). A step
//! holds a slot while it works and gives it back while the engine has it only wait ([`idle`]):
//! a retry's backoff, a poll for a resource to become ready or to finish deleting, a turn of a
//! paced API. (The SDK's own backoff inside one call still holds it.)
//! Two NAT gateways, a VPC link and a Cloud Map operation pending for minutes on AWS would
//! otherwise fill four slots, and the roles, queues and log groups behind them would wait for
//! nothing; a role created late also starts its IAM propagation late.

use futures::{Stream, StreamExt};
use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

tokio::task_local! {
    /// The slot of the step this future is part of.
    static STEP: RefCell<Step>;
}

struct Step {
    slots: Arc<Semaphore>,
    /// `None` while the step waits.
    permit: Option<OwnedSemaphorePermit>,
}

/// The slots of one phase of apply or destroy.
pub(super) struct Slots {
    slots: Arc<Semaphore>,
    /// A slot a waiting step gave back, kept by [`next`](Self::next) for the step that is
    /// ready to start (the semaphore would hand it to the next step back from waiting).
    spare: Option<OwnedSemaphorePermit>,
}

/// What [`Slots::next`] waited for.
pub(super) enum Next<T> {
    /// A step ended, with its result.
    Ended(T),
    /// A slot came free for the step that is ready: start it.
    Slot,
    /// Nothing runs any more.
    Done,
}

impl Slots {
    pub(super) fn new(n: usize) -> Slots {
        Slots { slots: Arc::new(Semaphore::new(n.max(1))), spare: None }
    }

    /// A free slot now (the one kept for a ready step first), if there is one.
    pub(super) fn try_take(&mut self) -> Option<OwnedSemaphorePermit> {
        self.spare.take().or_else(|| self.slots.clone().try_acquire_owned().ok())
    }

    /// The next step of `running` to end, or, where `blocked` (a step is ready but found no
    /// slot), a slot a waiting step gave back, kept for it. A slot kept before and not taken
    /// is let go first: held with no step to use it, it could starve a step waiting to go on.
    pub(super) async fn next<S: Stream + Unpin>(&mut self, running: &mut S, blocked: bool) -> Next<S::Item> {
        self.spare = None;
        let slots = self.slots.clone();
        tokio::select! {
            ended = running.next() => ended.map_or(Next::Done, Next::Ended),
            slot = slots.acquire_owned(), if blocked => {
                self.spare = Some(slot.expect("the slots are never closed"));
                Next::Slot
            }
        }
    }

    /// The next slot to come free (first come, first served: a step back from waiting queues
    /// like a new one).
    #[cfg(test)]
    async fn take(&self) -> OwnedSemaphorePermit {
        self.slots.clone().acquire_owned().await.expect("the slots are never closed")
    }

    /// Runs `step` in `slot`, which [`idle`] waits inside it give back.
    pub(super) fn run<F: Future>(&self, slot: OwnedSemaphorePermit, step: F) -> impl Future<Output = F::Output> {
        STEP.scope(RefCell::new(Step { slots: self.slots.clone(), permit: Some(slot) }), step)
    }
}

/// Runs `wait` without the step's slot, then waits for a slot again before the step goes on.
/// Outside a step (observe, the lock), or where another wait of the same step already gave
/// the slot back, it only runs `wait`.
pub async fn idle<F: Future>(wait: F) -> F::Output {
    idle_then(wait, |_| true).await
}

/// [`idle`], taking a slot again only where `goes_on` says the step goes on after this wait
/// (a step that stops after it sends nothing more: it ends without waiting for a slot).
pub async fn idle_then<F: Future>(wait: F, goes_on: impl FnOnce(&F::Output) -> bool) -> F::Output {
    let gave_back = STEP.try_with(|s| {
        let mut s = s.borrow_mut();
        s.permit.take().map(|p| {
            drop(p);
            s.slots.clone()
        })
    });
    let out = wait.await;
    if let (Ok(Some(slots)), true) = (gave_back, goes_on(&out)) {
        let permit = slots.acquire_owned().await.expect("the slots are never closed");
        STEP.with(|s| s.borrow_mut().permit = Some(permit));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// One slot, two steps: while the first waits, the second works in its slot; the first
    /// goes on only once the slot is free again. Outside a step, `idle` only waits.
    #[tokio::test]
    async fn a_waiting_step_lends_its_slot_and_takes_one_back_before_going_on() {
        let mut slots = Slots::new(1);
        let log = Arc::new(Mutex::new(Vec::new()));
        let note = |what: &'static str| log.lock().unwrap().push(what);
        let slot = slots.try_take().unwrap();
        let first = slots.run(slot, async {
            note("first works");
            idle(tokio::time::sleep(Duration::from_millis(50))).await;
            note("first goes on");
        });
        let second = async {
            let slot = slots.take().await;
            slots
                .run(slot, async {
                    note("second works");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    note("second ends");
                })
                .await
        };
        tokio::join!(first, second);
        assert_eq!(*log.lock().unwrap(), ["first works", "second works", "second ends", "first goes on"]);
        assert!(slots.try_take().is_some(), "every slot is free again");
        assert_eq!(idle(async { 7 }).await, 7);
    }

    /// A step that stops after its wait does not queue for a slot it will not use: a stopped
    /// run ends its steps at once, however busy the slots are.
    #[tokio::test]
    async fn a_step_that_stops_after_its_wait_takes_no_slot_back() {
        let mut slots = Slots::new(1);
        let slot = slots.try_take().unwrap();
        let busy = slots.run(slot, async {
            idle_then(async { "stopped" }, |_| false).await;
            slots.slots.available_permits()
        });
        assert_eq!(busy.await, 1, "the slot it gave back stayed free");
    }
}
