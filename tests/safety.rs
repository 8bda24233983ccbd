//! Safe to leave running: the stack lock fences two reconcilers, a lost lease stops new
//! mutations, and a signal during a pass lets the call in flight finish, starts nothing new,
//! releases the lock and exits 0. Each test owns its moto server.

use crate::{cli, fault_proxy, support};

use fault_proxy::{Fault, FaultProxy, Rule};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Moto, Run};

const KEY: &str = "reconciler/benchling-webhook.lock";

async fn s3(moto: &Moto) -> aws_sdk_s3::Client {
    let aws = moto.sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&aws).force_path_style(true).build());
    s3.create_bucket().bucket("locks").send().await.unwrap();
    s3
}

/// specs/prod.yaml with a lock in the bucket `locks`.
fn locked_spec(moto: &Moto, ttl: u32) -> String {
    cli::spec_variant(moto, "specs/prod.yaml", "locked.yaml", |s| {
        s.replace("lock:\n  bucket: benchling-webhook-ops\n", &format!("lock:\n  bucket: locks\n  ttl_seconds: {ttl}\n"))
    })
}

fn spawn(moto: &Moto, endpoint: &str, args: &[&str]) -> Child {
    cli::command(moto, endpoint, "3").args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn finish(child: Child) -> Run {
    Run::from(child.wait_with_output().unwrap())
}

async fn lease(s3: &aws_sdk_s3::Client) -> Option<serde_json::Value> {
    let out = s3.get_object().bucket("locks").key(KEY).send().await.ok()?;
    Some(serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).unwrap())
}

async fn vpcs(moto: &Moto) -> usize {
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let f = aws_sdk_ec2::types::Filter::builder().name("tag:reconciler:stack").values("benchling-webhook").build();
    ec2.describe_vpcs().filters(f).send().await.unwrap().vpcs().len()
}

async fn wait_for_call(proxy: &FaultProxy, action: &str) {
    let started = Instant::now();
    while proxy.count(action) == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "{action} was never called");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two live reconcilers started at once on an empty account: one holds the lock, the other
/// waits for it (`--lock-wait`) and then finds nothing to do. Exactly one of every resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconcilers_started_at_once_build_one_stack() {
    let moto = Moto::start();
    let s3 = s3(&moto).await;
    let spec = locked_spec(&moto, 900);
    let args = ["apply", spec.as_str(), "--auto-approve", "--lock-wait", "120"];
    let (a, b) = (spawn(&moto, &moto.endpoint, &args), spawn(&moto, &moto.endpoint, &args));
    let (a, b) = (finish(a), finish(b));
    assert_eq!((a.code, b.code), (0, 0), "{a}\n{b}");
    let created = |r: &Run| r.stdout.contains("Apply complete: 43 created");
    assert!(created(&a) ^ created(&b), "exactly one of them builds the stack\n{a}\n{b}");
    assert!(a.stdout.contains("No changes") || b.stdout.contains("No changes"), "the other finds it built\n{a}\n{b}");
    assert_eq!(vpcs(&moto).await, 1);
    let iam = aws_sdk_iam::Client::new(&moto.sdk_config().await);
    assert_eq!(iam.list_roles().path_prefix("/reconciler/benchling-webhook/").send().await.unwrap().roles().len(), 5);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    assert_eq!(ecs.list_services().cluster("benchling-webhook-cluster").send().await.unwrap().service_arns().len(), 1);
    assert!(lease(&s3).await.is_none(), "both released the lock");
}

/// A store whose conditional create is not atomic (moto is one) can let two takers write the
/// lease at the same moment; the later write holds it. The lease is read back while the
/// command reads on, and every change waits for that: here another writer's lease lands right
/// after ours, and `confirmed` is a `Held` error naming that holder (the command then takes
/// the lock again within `--lock-wait`, or fails naming the holder); the stack-lock writes
/// refuse too. A lease nobody overwrote is confirmed, and its writes go ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_overwritten_as_it_was_taken_is_not_confirmed_and_changes_nothing() {
    use reconciler::engine::lock::{Held, StackLock};
    let moto = Moto::start();
    let s3 = s3(&moto).await;
    let take = || async {
        let stop = std::sync::Arc::new(reconciler::engine::Stop::default());
        StackLock::acquire(&s3, "locks", KEY, "benchling-webhook", Duration::from_secs(60), Duration::ZERO, stop).await.unwrap()
    };
    let lock = take().await;
    let other = serde_json::json!({"stack": "benchling-webhook", "holder": "other-host/pid-7/1", "expires_at": u64::MAX});
    s3.put_object().bucket("locks").key(KEY).body(other.to_string().into_bytes().into()).send().await.unwrap();
    let e = lock.confirmed().await.unwrap_err();
    assert!(e.downcast_ref::<Held>().is_some(), "{e:#}");
    assert!(e.to_string().contains("other-host/pid-7/1"), "names the holder: {e:#}");
    assert!(lock.mark_destroyed().await.is_err(), "no write under a lease that is not ours");
    lock.abandon();
    assert_eq!(lease(&s3).await.unwrap()["holder"], "other-host/pid-7/1", "the holder's lease stays");

    s3.delete_object().bucket("locks").key(KEY).send().await.unwrap();
    let lock = take().await;
    lock.confirmed().await.unwrap();
    lock.mark_destroyed().await.unwrap();
    lock.clear_destroyed().await.unwrap();
    lock.release().await.unwrap();
    assert!(lease(&s3).await.is_none(), "released");
}

/// The same through the CLI: another taker's lease lands between the apply's and its
/// read-back (the proxy holds the lock's first calls 2 s each; the test writes the other
/// lease, live for 5 s, as soon as the apply's is there). With `--lock-wait 0` the apply
/// fails naming that holder, creates nothing and leaves its lease; with `--lock-wait 30` it
/// takes the lock again once that lease has expired, reads the stack again and builds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_that_lost_its_lease_at_the_same_moment_fails_naming_the_holder_or_takes_it_again() {
    let moto = Moto::start();
    let s3 = s3(&moto).await;
    let spec = locked_spec(&moto, 60);
    for (wait, code) in [("0", 1), ("30", 0)] {
        let proxy = FaultProxy::start(&moto.endpoint).await;
        proxy.rule(Rule::delay("s3:?", Duration::from_secs(2)).first(3));
        let child = spawn(&moto, &proxy.url, &["apply", &spec, "--auto-approve", "--lock-wait", wait]);
        let started = Instant::now();
        while lease(&s3).await.is_none() {
            assert!(started.elapsed() < Duration::from_secs(30), "the apply never took the lease");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let other =
            serde_json::json!({"stack": "benchling-webhook", "holder": "other-host/pid-9/2", "acquired_at": now, "expires_at": now + 5});
        s3.put_object().bucket("locks").key(KEY).body(other.to_string().into_bytes().into()).send().await.unwrap();
        let run = finish(child);
        assert_eq!(run.code, code, "--lock-wait {wait}\n{run}");
        assert!(run.stderr.contains("other-host/pid-9/2 (it won a simultaneous acquisition"), "--lock-wait {wait}\n{run}");
        if code == 1 {
            assert_eq!(vpcs(&moto).await, 0, "nothing was created\n{run}");
            assert_eq!(lease(&s3).await.unwrap()["holder"], "other-host/pid-9/2", "the holder's lease stays\n{run}");
            s3.delete_object().bucket("locks").key(KEY).send().await.unwrap();
        } else {
            assert!(run.stderr.contains("taking over an expired lock from other-host/pid-9/2"), "{run}");
            assert_eq!(vpcs(&moto).await, 1, "{run}");
            assert!(lease(&s3).await.is_none(), "released at the end\n{run}");
        }
    }
}

/// S3 throttles for 3 s right after the lease was written: the read-back that confirms it
/// is tried again (the lease is ours until its TTL; a throttle says nothing about who holds
/// it) and the apply goes ahead, instead of failing on the read-back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_read_back_of_the_lease_is_tried_again() {
    let moto = Moto::start();
    let s3 = s3(&moto).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    // After the first S3 call (the lease), every S3 call for 3 s: the read-back and the
    // destroyed mark (a mark that cannot be read is a warning for an apply).
    proxy.rule(Rule::error("s3:?", 503, "SlowDown", "Please reduce your request rate.").for_secs_after_first("s3:?", 3.0));
    let spec = locked_spec(&moto, 60);
    let run = finish(spawn(&moto, &proxy.url, &["apply", &spec, "--auto-approve"]));
    assert!(proxy.injected("s3:?") >= 2, "the read-back met the throttling\n{run}");
    assert_eq!(run.code, 0, "{run}");
    assert!(!run.stderr.contains("reading back the lock"), "{run}");
    assert_eq!(vpcs(&moto).await, 1);
    assert!(lease(&s3).await.is_none(), "released at the end\n{run}");
}

/// SIGTERM while a call is in flight: it finishes, nothing new starts, the lease is
/// released, and `run` exits 0 within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_pass_finishes_the_call_in_flight_and_releases_the_lock() {
    let moto = Moto::start();
    let s3 = s3(&moto).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.inject("ec2:CreateVpc", &[Fault::Delay(3000)]);
    let spec = locked_spec(&moto, 900);
    let child = spawn(&moto, &proxy.url, &["run", &spec, "--interval", "60", "--iterations", "3"]);
    wait_for_call(&proxy, "ec2:CreateVpc").await;
    assert!(lease(&s3).await.is_some(), "the pass holds the lock");
    let signalled = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let run = finish(child);
    assert!(signalled.elapsed() < Duration::from_secs(10), "took {:?}\n{run}", signalled.elapsed());
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("\"result\":\"stopped\""), "{run}");
    assert_eq!(vpcs(&moto).await, 1, "the call in flight finished");
    assert_eq!(proxy.count("ec2:CreateSubnet"), 0, "nothing that needed the VPC started\n{run}");
    assert!(lease(&s3).await.is_none(), "the lock was released\n{run}");
}

/// A renewal that fails (the lease was taken over while a slow call ran) stops new
/// mutations, the command fails saying the lease was lost, and the new holder's lease is
/// not deleted on the way out (the release is conditional on our ETag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_new_mutations_and_is_not_deleted() {
    let moto = Moto::start();
    let s3 = s3(&moto).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    // Renewal comes every ttl/3 = 20 s; the VPC create is held past it.
    proxy.inject("ec2:CreateVpc", &[Fault::Delay(24_000)]);
    let spec = locked_spec(&moto, 60);
    let child = spawn(&moto, &proxy.url, &["apply", &spec, "--auto-approve"]);
    wait_for_call(&proxy, "ec2:CreateVpc").await;
    let held = lease(&s3).await.expect("held");
    assert!(held["renewed_at"].as_u64() >= held["acquired_at"].as_u64() && held["acquired_at"].as_u64() > Some(0), "{held}");
    // Someone else takes the lease over.
    let intruder =
        serde_json::json!({"stack": "benchling-webhook", "holder": "intruder", "acquired_at": 1, "expires_at": 9_999_999_999u64});
    s3.put_object().bucket("locks").key(KEY).body(intruder.to_string().into_bytes().into()).send().await.unwrap();
    let run = finish(child);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("was lost"), "{run}");
    assert_eq!(proxy.count("ec2:CreateSubnet"), 0, "no new mutation after the lease was lost\n{run}");
    assert_eq!(lease(&s3).await.expect("the new holder's lease stays")["holder"], "intruder", "{run}");
}

/// S3 throttles the lock's renewal for a few seconds (503 SlowDown): the lease is still ours
/// until its TTL, so the renewal is tried again within it instead of giving the lock up, and
/// the apply finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_renewal_is_retried_within_the_lease() {
    let moto = Moto::start();
    let s3 = s3(&moto).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    // TTL 60 s (the shortest a spec allows): the first renewal comes at 20 s, while S3
    // throttles every call for 23 s from the first change (the lease is confirmed by then);
    // the VPC create is held 24 s so that the apply is still running.
    proxy.rule(Rule::error("s3:?", 503, "SlowDown", "Please reduce your request rate.").for_secs_after_first("logs:CreateLogGroup", 23.0));
    proxy.inject("ec2:CreateVpc", &[Fault::Delay(24_000)]);
    let spec = locked_spec(&moto, 60);
    let run = finish(spawn(&moto, &proxy.url, &["apply", &spec, "--auto-approve"]));
    assert!(proxy.injected("s3:?") > 0, "the renewal met the throttling\n{run}");
    assert_eq!(run.code, 0, "{run}");
    assert!(!run.stderr.contains("was lost"), "{run}");
    assert_eq!(vpcs(&moto).await, 1);
    assert!(lease(&s3).await.is_none(), "released at the end\n{run}");
}

/// Destroy vs the in-stack drift correction: a pass that started before the destroy (its
/// task was launched by the schedule, then waited for the lease) runs after it. It must not
/// build the stack again: destroy leaves a mark beside the lease, and a `run` pass that finds
/// it changes nothing and says why. A person's `apply` builds the stack again and removes the
/// mark, and passes run as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_after_a_destroy_does_not_build_the_stack_again() {
    let moto = Moto::start();
    // Nothing retained, so the stack can be applied again from zero.
    let spec = cli::spec_variant(&moto, "specs/prod.yaml", "nothing-retained.yaml", |s| {
        s.replace("deletion_policy: retain", "deletion_policy: delete")
    });
    let spec = spec.as_str();
    cli::apply(&moto, spec);
    let destroy = cli::reconciler(&moto, &["destroy", spec, "--auto-approve"]);
    assert_eq!(destroy.code, 0, "{destroy}");
    assert_eq!(vpcs(&moto).await, 0);
    let pass = cli::reconciler(&moto, &["run", spec, "--iterations", "1"]);
    assert_ne!(pass.code, 0, "{pass}");
    assert!(pass.stdout.contains("was destroyed: this pass changes nothing"), "{pass}");
    assert_eq!(vpcs(&moto).await, 0, "the pass built nothing\n{pass}");
    // An apply that does not go ahead (no approval, no terminal) leaves the mark.
    let cancelled = cli::reconciler(&moto, &["apply", spec]);
    assert_ne!(cancelled.code, 0, "{cancelled}");
    let pass = cli::reconciler(&moto, &["run", spec, "--iterations", "1"]);
    assert!(pass.code != 0 && pass.stdout.contains("was destroyed"), "a cancelled apply cleared the mark\n{pass}");
    cli::apply(&moto, spec);
    let pass = cli::reconciler(&moto, &["run", spec, "--iterations", "1"]);
    assert_eq!(pass.code, 0, "{pass}");
    assert_eq!(vpcs(&moto).await, 1);
}

/// A drift-correction pass running (a task the schedule started) when a person destroys the
/// stack holds the stack lock. Destroy stops it (ECS StopTask: SIGTERM, and the pass ends its
/// waits, lets the call in flight finish and releases the lock), takes the lock and destroys
/// the stack in one run. Here the pass is a task run in moto as the schedule would run it,
/// and its lease an object the test writes and deletes when the task is told to stop, as the
/// pass would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_stops_a_drift_correction_pass_that_holds_the_lock() {
    destroy_while_a_pass_holds_the_lock(false).await;
}

/// The same pass already told to stop (a destroy killed while it waited for it) and still
/// STOPPING: the next destroy waits for it to exit instead of failing on the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_waits_for_a_pass_still_stopping() {
    destroy_while_a_pass_holds_the_lock(true).await;
}

async fn destroy_while_a_pass_holds_the_lock(already_stopping: bool) {
    use aws_sdk_ecs::types::{AwsVpcConfiguration, LaunchType, NetworkConfiguration, PropagateTags};
    let moto = Moto::start();
    cli::apply(&moto, "specs/prod.yaml");
    let c = moto.sdk_config().await;
    let ecs = aws_sdk_ecs::Client::new(&c);
    let schedule =
        aws_sdk_scheduler::Client::new(&c).get_schedule().group_name("benchling-webhook").name("drift-correction").send().await.unwrap();
    let target = schedule.target().unwrap();
    let params = target.ecs_parameters().unwrap();
    assert_eq!(params.propagate_tags().map(|p| p.as_str()), Some("TASK_DEFINITION"), "the runs carry the stack's tags");
    let vpc = params.network_configuration().unwrap().awsvpc_configuration().unwrap();
    let network = AwsVpcConfiguration::builder()
        .set_subnets(Some(vpc.subnets().to_vec()))
        .set_security_groups(Some(vpc.security_groups().to_vec()))
        .build()
        .unwrap();
    let started = ecs
        .run_task()
        .cluster(target.arn())
        .task_definition(params.task_definition_arn())
        .launch_type(LaunchType::Fargate)
        .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(network).build())
        .propagate_tags(PropagateTags::TaskDefinition)
        .send()
        .await
        .unwrap();
    let task = started.tasks()[0].task_arn().unwrap().to_string();
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&c).force_path_style(true).build());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let pass = serde_json::json!({"stack": "benchling-webhook", "holder": "ip-10-0-3-7/pid-1/42", "acquired_at": now, "renewed_at": now, "expires_at": now + 600});
    let bucket = support::LOCK_BUCKET;
    s3.put_object().bucket(bucket).key(support::LOCK_KEY).body(pass.to_string().into_bytes().into()).send().await.unwrap();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    // The pass exits (and releases its lease) once told to stop; already told, it is STOPPING
    // for the first two looks.
    let exits_after = if already_stopping {
        ecs.stop_task().cluster(target.arn()).task(&task).reason("an earlier destroy").send().await.unwrap();
        let stopping =
            format!(r#"{{"tasks": [{{"taskArn": "{task}", "lastStatus": "STOPPING", "desiredStatus": "STOPPED"}}], "failures": []}}"#);
        proxy.rule(Rule::respond("ecs:DescribeTasks", 200, &stopping).first(2));
        "ecs:DescribeTasks"
    } else {
        "ecs:StopTask"
    };
    let released = tokio::spawn({
        let (proxy, s3) = (proxy.clone(), s3.clone());
        async move {
            wait_for_call(&proxy, exits_after).await;
            while already_stopping && proxy.injected(exits_after) < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            s3.delete_object().bucket(bucket).key(support::LOCK_KEY).send().await.unwrap();
        }
    });
    let run = cli::reconciler_via(&moto, &proxy.url, "3", &["destroy", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    released.await.unwrap();
    assert!(run.stderr.contains("stopped the stack's drift-correction pass"), "{run}");
    if already_stopping {
        assert_eq!(proxy.count("ecs:StopTask"), 0, "not stopped twice\n{run}");
        assert!(proxy.injected("ecs:DescribeTasks") >= 2, "waited while it was STOPPING\n{run}");
    }
    let after = ecs.describe_tasks().cluster(target.arn()).tasks(&task).send().await.unwrap();
    assert_eq!(after.tasks()[0].last_status(), Some("STOPPED"), "{run}");
    assert_eq!(vpcs(&moto).await, 0, "{run}");
}
