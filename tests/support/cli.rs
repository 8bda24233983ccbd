//! Running the reconciler CLI against moto from the reconciler's integration tests.
#![allow(dead_code)]

use super::support::{repo_root, Moto, Run};
use std::process::{Command, Stdio};

/// Runs the reconciler CLI against `endpoint` (moto itself, or the fault proxy in front of
/// it), with fast waits, `attempts` tries per call, and no waiting for ECS deployments
/// (moto never reaches a steady state).
pub fn reconciler_via(moto: &Moto, endpoint: &str, attempts: &str, args: &[&str]) -> Run {
    Run::from(command(moto, endpoint, attempts).args(args).output().expect("run reconciler"))
}

/// The reconciler CLI, not started yet, set up as [`reconciler_via`] describes (no standard
/// input); callers add the arguments and how to collect its output.
pub fn command(moto: &Moto, endpoint: &str, attempts: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reconciler"));
    c.current_dir(repo_root())
        .envs(moto.env())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("RECONCILER_POLL_INTERVAL", "0.05")
        .env("RECONCILER_MAX_ATTEMPTS", attempts)
        .env("RECONCILER_RETRY_BASE_MS", "5")
        // An ambiguous create (a 5xx the proxy made up before moto saw the call) is looked for
        // this long before it is sent again; moto lists a create at once.
        .env("RECONCILER_LISTING_LAG", "1")
        .env("RECONCILER_WAIT_FOR_DEPLOYMENTS", "false")
        .stdin(Stdio::null());
    c
}

/// The CLI straight against moto, one try per call.
pub fn reconciler(moto: &Moto, args: &[&str]) -> Run {
    reconciler_via(moto, &moto.endpoint, "1", args)
}

/// A copy of a shipped spec with `edit` applied, in a directory of this test's own; its path.
pub fn spec_variant(moto: &Moto, from: &str, name: &str, edit: impl Fn(String) -> String) -> String {
    let dir = std::env::temp_dir().join(format!("spec-{}", moto.port));
    std::fs::create_dir_all(&dir).unwrap();
    let text = edit(std::fs::read_to_string(repo_root().join(from)).unwrap());
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// A plan that must be a no-op (exit 0 with --detailed-exitcode).
pub fn assert_converged(moto: &Moto, spec: &str) {
    let plan = reconciler(moto, &["plan", spec, "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "expected a no-op plan\n{plan}");
    assert!(plan.stdout.contains("No changes"), "{plan}");
}

/// A moto holding `spec` applied, as [`apply`] leaves a fresh one: a fork of a template the
/// first test of the run to ask builds (one apply per run, not one per test; each test still
/// owns its copy). Where the template cannot be had, this test applies in its own moto and
/// says why.
pub fn applied(spec: &str) -> Moto {
    use std::hash::{Hash, Hasher};
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let binary = modified(std::path::Path::new(env!("CARGO_BIN_EXE_reconciler")));
    // The tests too: how they start an emulator and the settings they run the CLI with.
    let tests = std::env::current_exe().ok().and_then(|exe| modified(&exe));
    let text = std::fs::read_to_string(repo_root().join(spec)).unwrap();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (spec, text, binary, tests).hash(&mut h);
    match Moto::from_template(&format!("applied-{:016x}", h.finish()), |moto| try_apply(moto, spec)) {
        Ok(moto) => moto,
        Err(e) => {
            eprintln!("no applied template ({e}); applying in this test's own emulator");
            let moto = Moto::start();
            apply(&moto, spec);
            moto
        }
    }
}

/// `apply SPEC --auto-approve`, which must succeed.
pub fn apply(moto: &Moto, spec: &str) {
    if let Err(run) = try_apply(moto, spec) {
        panic!("{run}");
    }
}

/// `apply SPEC --auto-approve`; what it printed where it failed.
fn try_apply(moto: &Moto, spec: &str) -> Result<(), String> {
    let run = reconciler(moto, &["apply", spec, "--auto-approve"]);
    if run.code == 0 {
        Ok(())
    } else {
        Err(format!("exit {}\n{run}", run.code))
    }
}

/// A client for each service the stack uses, all pointed at one moto.
pub struct Aws {
    pub apigw: aws_sdk_apigatewayv2::Client,
    pub cloudmap: aws_sdk_servicediscovery::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub iam: aws_sdk_iam::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub scaling: aws_sdk_applicationautoscaling::Client,
    pub sched: aws_sdk_scheduler::Client,
    pub sqs: aws_sdk_sqs::Client,
}

pub async fn aws(moto: &Moto) -> Aws {
    let c = moto.sdk_config().await;
    Aws {
        apigw: aws_sdk_apigatewayv2::Client::new(&c),
        cloudmap: aws_sdk_servicediscovery::Client::new(&c),
        ec2: aws_sdk_ec2::Client::new(&c),
        ecs: aws_sdk_ecs::Client::new(&c),
        iam: aws_sdk_iam::Client::new(&c),
        logs: aws_sdk_cloudwatchlogs::Client::new(&c),
        scaling: aws_sdk_applicationautoscaling::Client::new(&c),
        sched: aws_sdk_scheduler::Client::new(&c),
        sqs: aws_sdk_sqs::Client::new(&c),
    }
}

/// The stack's Elastic IP `alloc` replaced out of band: a new address takes its tags, and
/// `alloc` loses the stack's (so the next apply moves its NAT gateway to the new address,
/// create-before-destroy). The new allocation id.
pub async fn replace_stack_address(ec2: &aws_sdk_ec2::Client, alloc: &str) -> String {
    use aws_sdk_ec2::types::{DomainType, ResourceType, Tag, TagSpecification};
    let tags = ec2.describe_addresses().allocation_ids(alloc).send().await.unwrap().addresses()[0].tags().to_vec();
    let new = ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .tag_specifications(TagSpecification::builder().resource_type(ResourceType::ElasticIp).set_tags(Some(tags)).build())
        .send()
        .await
        .unwrap();
    ec2.delete_tags()
        .resources(alloc)
        .tags(Tag::builder().key("reconciler:stack").build())
        .tags(Tag::builder().key("reconciler:id").build())
        .send()
        .await
        .unwrap();
    new.allocation_id().unwrap().to_string()
}
