//! Durable acknowledgement: an event is acknowledged only once its queue accepted it.

use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Where verified events go. FIFO semantics: `group` orders (the entry id), `dedup` makes a
/// retried send harmless (the webhook-id).
pub trait Queue: Send + Sync {
    fn send<'a>(&'a self, group: &'a str, dedup: &'a str, body: String) -> BoxFuture<'a, Result<(), String>>;
}

/// SQS's limit on the entries of one SendMessageBatch.
pub const MAX_BATCH: usize = 10;
/// The bodies of one batch add up to at most this many bytes: SQS's limit on a batch's
/// payload was 256 KiB for years (1 MiB since 2025); the smaller one holds on every queue. A
/// bigger event goes on its own, as a SendMessage, whatever the queue's own limit is.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// SQS FIFO queue with group commit. Each event waits for a free call slot
/// (`SQS_MAX_IN_FLIGHT`, default 4): when one is free it goes at once, alone, as a
/// SendMessage; when all are busy the events arriving meanwhile go together in the next call
/// as one SendMessageBatch (up to 10 entries, 256 KiB), each answered by its own entry of the
/// reply. Under load this spends one signed HTTPS call on up to ten acknowledgements (the call,
/// not the event, is what costs CPU: about two thirds of it per event when every event had
/// its own call, measured in `make bench-service`) without ever holding an event back to wait
/// for company. Four slots carry 4 × 10 events per call latency: about 2,000 events a second
/// at 20 ms a call, twice what a 0.25-vCPU task can verify; below 4 per call latency (about
/// 200 a second) every event has a call of its own at once. Order within a group is kept
/// inside a batch, unless an entry fails and a later one of its group does not; across calls
/// in flight it never was (two concurrent SendMessage calls race the same way). `sqs:SendMessage` permits SendMessageBatch too (IAM has no separate action).
///
/// A send, waiting for its turn included, gives up after `timeout` (`SQS_SEND_TIMEOUT_MS`,
/// 10 s by default): the event is then answered 503 (not acknowledged) long before API
/// Gateway's 30 s integration timeout would cut the caller off with a 504 whose outcome is
/// unknown. An event whose caller gave up before its call started is not sent. The client
/// itself has the same operation timeout and a third of it per attempt (`sqs_client`), so a
/// hung connection is retried once or twice inside that budget.
pub struct SqsQueue {
    pending: mpsc::UnboundedSender<Pending>,
    timeout: Duration,
}

/// One event waiting for a call, and where its outcome goes.
struct Pending {
    group: String,
    dedup: String,
    body: String,
    done: oneshot::Sender<Result<(), String>>,
}

impl SqsQueue {
    /// Starts the dispatcher (needs a Tokio runtime); it ends when the queue is dropped.
    pub fn new(client: aws_sdk_sqs::Client, url: String, max_in_flight: usize, timeout: Duration) -> Self {
        let (pending, rx) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(client, Arc::from(url), rx, Arc::new(Semaphore::new(max_in_flight.max(1)))));
        SqsQueue { pending, timeout }
    }
}

/// Takes a call slot, then the next event and every event already waiting behind it that fits
/// in one batch, and sends them in a call of its own.
async fn dispatch(client: aws_sdk_sqs::Client, url: Arc<str>, mut rx: mpsc::UnboundedReceiver<Pending>, slots: Arc<Semaphore>) {
    let mut carried: Option<Pending> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let (batch, rest) = fill(first, || rx.try_recv().ok());
        carried = rest;
        if batch.is_empty() {
            continue; // every caller had given up
        }
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            send_batch(&client, &url, batch).await;
            drop(slot);
        });
    }
}

/// A batch from `first` and what `next` yields without waiting: at most [`MAX_BATCH`] events
/// and [`MAX_BATCH_BYTES`] of bodies (an event over that goes alone); events whose caller gave
/// up are dropped. Returns the batch and the event that did not fit, which starts the next.
fn fill(first: Pending, mut next: impl FnMut() -> Option<Pending>) -> (Vec<Pending>, Option<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut bytes = 0;
    let mut candidate = Some(first);
    while let Some(p) = candidate.take().or_else(&mut next) {
        if p.done.is_closed() {
            continue;
        }
        if !batch.is_empty() && bytes + p.body.len() > MAX_BATCH_BYTES {
            return (batch, Some(p));
        }
        bytes += p.body.len();
        batch.push(p);
        if batch.len() == MAX_BATCH || bytes > MAX_BATCH_BYTES {
            break;
        }
    }
    (batch, None)
}

/// One call for the batch; every event learns its own outcome.
async fn send_batch(client: &aws_sdk_sqs::Client, url: &str, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let p = batch.pop().expect("one event");
        let r = client
            .send_message()
            .queue_url(url)
            .message_group_id(p.group)
            .message_deduplication_id(p.dedup)
            .message_body(p.body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("SQS SendMessage: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)));
        let _ = p.done.send(r);
        return;
    }
    let mut call = client.send_message_batch().queue_url(url);
    let mut waiting = Vec::with_capacity(batch.len());
    for (i, p) in batch.into_iter().enumerate() {
        let entry = SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_group_id(p.group)
            .message_deduplication_id(p.dedup)
            .message_body(p.body)
            .build()
            .expect("id and body are set");
        call = call.entries(entry);
        waiting.push(p.done);
    }
    let outcomes = match call.send().await {
        Ok(out) => outcomes(&out, waiting.len()),
        Err(e) => {
            let why = format!("SQS SendMessageBatch: {}", aws_sdk_sqs::error::DisplayErrorContext(&e));
            vec![Err(why); waiting.len()]
        }
    };
    for (done, r) in waiting.into_iter().zip(outcomes) {
        let _ = done.send(r);
    }
}

/// Each entry's outcome from a SendMessageBatch reply (entry ids are the positions): only an
/// entry the reply lists as successful is queued; a failed or unmentioned one is not.
fn outcomes(out: &SendMessageBatchOutput, n: usize) -> Vec<Result<(), String>> {
    let mut r = vec![Err("SQS SendMessageBatch: the reply does not mention this entry".to_string()); n];
    for ok in out.successful() {
        if let Some(slot) = ok.id().parse::<usize>().ok().and_then(|i| r.get_mut(i)) {
            *slot = Ok(());
        }
    }
    for failed in out.failed() {
        if let Some(slot) = failed.id().parse::<usize>().ok().and_then(|i| r.get_mut(i)) {
            let by = if failed.sender_fault() { "refused" } else { "failed (SQS side)" };
            *slot = Err(format!("SQS SendMessageBatch: entry {by}: {}: {}", failed.code(), failed.message().unwrap_or_default()));
        }
    }
    r
}

/// An SQS client whose calls give up after `timeout` in all (a third of it per attempt).
pub fn sqs_client(aws: &aws_config::SdkConfig, timeout: Duration) -> aws_sdk_sqs::Client {
    sqs_client_with(aws, timeout, timeout / 3)
}

/// An SQS client whose calls give up after `operation` in all and `attempt` per attempt.
pub fn sqs_client_with(aws: &aws_config::SdkConfig, operation: Duration, attempt: Duration) -> aws_sdk_sqs::Client {
    let timeouts =
        aws_sdk_sqs::config::timeout::TimeoutConfig::builder().operation_timeout(operation).operation_attempt_timeout(attempt).build();
    aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(aws).timeout_config(timeouts).build())
}

impl Queue for SqsQueue {
    fn send<'a>(&'a self, group: &'a str, dedup: &'a str, body: String) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let (done, outcome) = oneshot::channel();
            let p = Pending { group: group.to_string(), dedup: dedup.to_string(), body, done };
            self.pending.send(p).map_err(|_| "the SQS dispatcher has stopped".to_string())?;
            match tokio::time::timeout(self.timeout, outcome).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err("the SQS dispatcher dropped the event".to_string()),
                Err(_) => Err(format!("the SQS send did not complete within {} ms", self.timeout.as_millis())),
            }
        })
    }
}

/// No queue configured: every send fails, so nothing is acknowledged that is not queued.
pub struct NoQueue;

impl Queue for NoQueue {
    fn send<'a>(&'a self, _: &'a str, _: &'a str, _: String) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Err("QUEUE_URL is not set".to_string()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};

    fn pending(body_len: usize) -> (Pending, oneshot::Receiver<Result<(), String>>) {
        let (done, rx) = oneshot::channel();
        (Pending { group: "g".into(), dedup: "d".into(), body: "x".repeat(body_len), done }, rx)
    }

    #[test]
    fn a_batch_takes_what_is_waiting_up_to_ten_entries_and_256_kib() {
        // Twelve small events waiting: ten go, two stay in the channel for the next call.
        let mut keep = Vec::new();
        let mut waiting: std::collections::VecDeque<Pending> = (0..12)
            .map(|_| {
                let (p, rx) = pending(100);
                keep.push(rx);
                p
            })
            .collect();
        let first = waiting.pop_front().unwrap();
        let (batch, rest) = fill(first, || waiting.pop_front());
        assert_eq!((batch.len(), rest.is_none(), waiting.len()), (10, true, 2));

        // Nothing else waiting: a batch of one (sent at once, as a SendMessage).
        let (p, _rx) = pending(10);
        let (batch, rest) = fill(p, || None);
        assert_eq!((batch.len(), rest.is_none()), (1, true));

        // 100 KiB bodies: two fit, the third is carried over to start the next batch.
        let mut big: std::collections::VecDeque<Pending> = (0..3)
            .map(|_| {
                let (p, rx) = pending(100 * 1024);
                keep.push(rx);
                p
            })
            .collect();
        let first = big.pop_front().unwrap();
        let (batch, rest) = fill(first, || big.pop_front());
        assert_eq!((batch.len(), rest.is_some()), (2, true));

        // An event over the byte cap goes alone, and closes its batch.
        let (p, _rx1) = pending(MAX_BATCH_BYTES + 1);
        let (q, _rx2) = pending(10);
        let mut more = Some(q);
        let (batch, rest) = fill(p, || more.take());
        assert_eq!((batch.len(), rest.is_none(), more.is_some()), (1, true, true));
    }

    #[test]
    fn an_event_whose_caller_gave_up_is_not_sent() {
        let (gone, rx) = pending(10);
        drop(rx);
        let (kept, _rx) = pending(10);
        let mut more = Some(kept);
        let (batch, _) = fill(gone, || more.take());
        assert_eq!(batch.len(), 1, "only the event somebody still waits for");
        let (gone, rx) = pending(10);
        drop(rx);
        assert!(fill(gone, || None).0.is_empty());
    }

    #[test]
    fn each_entry_is_acknowledged_only_if_the_reply_lists_it_as_successful() {
        let ok = |id: &str| SendMessageBatchResultEntry::builder().id(id).message_id("m").md5_of_message_body("x").build().unwrap();
        let out = SendMessageBatchOutput::builder()
            .successful(ok("0"))
            .successful(ok("2"))
            .failed(
                BatchResultErrorEntry::builder().id("1").sender_fault(false).code("InternalError").message("try again").build().unwrap(),
            )
            .build()
            .unwrap();
        let r = outcomes(&out, 4);
        assert_eq!(r[0], Ok(()));
        assert!(r[1].as_ref().is_err_and(|e| e.contains("InternalError") && e.contains("try again")), "{:?}", r[1]);
        assert_eq!(r[2], Ok(()));
        assert!(r[3].as_ref().is_err_and(|e| e.contains("does not mention")), "unmentioned: {:?}", r[3]);
    }
}
