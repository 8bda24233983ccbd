//! The service section and what it needs to run: the container's log group, the webhook's
//! FIFO queue and dead-letter queue, the task execution and task roles (least privilege,
//! generated from the spec and the reconciled ARNs), the ECS cluster, task definition and
//! Fargate service (registered in Cloud Map), and Application Auto Scaling.
//!
//! Policy documents are built in canonical form (every Action and Resource a sorted list,
//! statements a set), the form the IAM kind normalises live documents to, so that order and
//! formatting never show as drift.

use super::{refs_to, Builder};
use crate::engine::ownership::TagMap;
use crate::engine::{reference_to, set, Managed, Ref, Set};
use crate::ids;
use crate::resources::autoscaling::{ScalableTargetFields, ScalingPolicyFields};
use crate::resources::ecs::{
    ClusterFields, Container, EnvVar, HealthCheck, Log, Mount, Registry, SecretRef, ServiceFields, StrategyItem, TaskDefinitionFields,
};
use crate::resources::iam::RoleFields;
use crate::resources::logs::LogGroupFields;
use crate::resources::sqs::{QueueFields, Redrive};
use crate::spec::{Capacity, ImagePolicy, Service, Spec};
use serde_json::{json, Value};

/// The container's name in the task definition (the ECS service registry names it too).
pub const CONTAINER: &str = "webhook";
/// The writable scratch volume the worker unpacks exports in (the root filesystem is read-only).
const SCRATCH: &str = "tmp";

fn queue_name(stack: &str) -> String {
    crate::resources::sqs::queue_names(stack)[0].clone()
}
fn dead_letter_queue_name(stack: &str) -> String {
    crate::resources::sqs::queue_names(stack)[1].clone()
}
fn container_log_group(stack: &str) -> String {
    crate::resources::logs::stack_prefixes(stack)[0].clone()
}
/// IAM path of the stack's roles: the policy that `reconciler policy` prints scopes IAM
/// actions to it (one definition, in the IAM kind).
pub(super) fn role_path(stack: &str) -> String {
    crate::resources::iam::role_path(stack)
}

pub(super) fn build(b: &mut Builder, private_subnets: &[String]) {
    let Some(svc) = b.spec.service.clone() else { return };
    let spec = b.spec;
    let stack = spec.name.clone();

    let log_group = |tags| LogGroupFields { name: container_log_group(&stack), retention_days: Some(svc.logs.retention_days.into()), tags };
    b.add_with_policy("logs:log-group", "log-container", log_group, &[], svc.logs.deletion_policy);

    let q = &spec.queue;
    let queue = |name: String, retention: u64, redrive: Option<Redrive>| {
        move |tags| QueueFields {
            name: name.clone(),
            fifo: true,
            // The service sets the deduplication id (the webhook id) itself.
            content_based_dedup: false,
            visibility_timeout: q.visibility_timeout_seconds.into(),
            retention,
            sse: true,
            redrive: redrive.clone(),
            tags,
        }
    };
    // The dead-letter queue keeps messages the longest SQS allows, to leave time to look.
    b.add_with_policy("sqs:queue", "queue-dlq", queue(dead_letter_queue_name(&stack), 1_209_600, None), &[], q.deletion_policy);
    let redrive = Redrive { dead_letter_arn: Ref::attr("queue-dlq", "arn"), max_receive_count: q.max_receive_count.into() };
    let main = queue(queue_name(&stack), q.retention_seconds.into(), Some(redrive));
    b.add_with_policy("sqs:queue", ids::QUEUE, main, &[], q.deletion_policy);

    let trust = trust_policy(&spec.region, &b.facts.account);
    let execution = role(&stack, "execution", &trust, "execution", execution_policy(&svc));
    b.add("iam:role", "role-execution", execution, &[]);
    b.add("iam:role", "role-task", role(&stack, "task", &trust, "task", task_policy(spec)), &[]);

    let strategy = capacity_strategy(&svc.capacity);
    let cluster = |tags| ClusterFields {
        name: svc.cluster.clone(),
        container_insights: "enabled".into(),
        capacity_providers: vec!["FARGATE".into(), "FARGATE_SPOT".into()],
        default_strategy: strategy.clone(),
        tags,
    };
    b.add("ecs:cluster", ids::CLUSTER, cluster, &[]);

    b.add("ecs:task-definition", ids::TASK_DEFINITION, |tags| task_definition(spec, &svc, tags), &[]);

    let registry = spec.discovery.as_ref().map(|_| Registry {
        arn: Ref::attr(ids::DISCOVERY_SERVICE, "arn"),
        container_name: CONTAINER.into(),
        container_port: svc.port.into(),
    });
    // With autoscaling, the live count belongs to it: set on create, drift only outside [min, max].
    let desired_count: Managed<u64> = match &spec.scaling {
        Some(sc) => Managed::Within { min: sc.min.into(), max: sc.max.into(), initial: svc.desired_count.into() },
        None => Managed::Is(svc.desired_count.into()),
    };
    let egress = b.private_egress();
    let service = |tags| ServiceFields {
        name: stack.clone(),
        cluster_name: svc.cluster.clone(),
        cluster: Ref::attr(ids::CLUSTER, "arn"),
        task_definition: Ref::attr(ids::TASK_DEFINITION, "arn"),
        desired_count: desired_count.clone(),
        capacity_strategy: strategy.clone(),
        subnets: refs_to(private_subnets),
        security_groups: Set::of(vec![Ref::to(ids::SG_SERVICE)]),
        assign_public_ip: false,
        registry: registry.clone(),
        circuit_breaker: true,
        min_healthy_percent: 100,
        max_percent: 200,
        health_check_grace: svc.health_check_grace_seconds.into(),
        propagate_tags: "SERVICE".into(),
        managed_tags: true,
        tags,
    };
    b.add("ecs:service", ids::SERVICE, service, &egress.iter().map(String::as_str).collect::<Vec<_>>());

    if let Some(sc) = &spec.scaling {
        let resource_id = format!("service/{}/{stack}", svc.cluster);
        let target = ScalableTargetFields {
            resource_id: resource_id.clone(),
            dimension: "ecs:service:DesiredCount".into(),
            min: sc.min.into(),
            max: sc.max.into(),
        };
        b.add_untagged("application-autoscaling:scalable-target", "scaling-target", target, &[ids::SERVICE]);
        for (id, suffix, metric, target) in [
            ("scaling-cpu", "cpu", "ECSServiceAverageCPUUtilization", sc.cpu_target),
            ("scaling-memory", "memory", "ECSServiceAverageMemoryUtilization", sc.memory_target),
        ] {
            let Some(target) = target else { continue };
            let policy = ScalingPolicyFields {
                name: format!("{stack}-{suffix}"),
                resource_id: resource_id.clone(),
                metric: Some(metric.into()),
                target: Some(target.into()),
                scale_in_cooldown: Some(sc.scale_in_cooldown.into()),
                scale_out_cooldown: Some(sc.scale_out_cooldown.into()),
            };
            b.add_untagged("application-autoscaling:scaling-policy", id, policy, &["scaling-target"]);
        }
    }
}

/// One of the stack's roles (`<stack>-<suffix>`, under the stack's IAM path) with one inline
/// policy.
pub(super) fn role(stack: &str, suffix: &str, trust: &Value, policy_name: &str, policy: Value) -> impl Fn(TagMap) -> RoleFields {
    let (name, path, trust, policy_name) = (format!("{stack}-{suffix}"), role_path(stack), trust.clone(), policy_name.to_string());
    move |tags| RoleFields {
        name: name.clone(),
        path: path.clone(),
        trust: trust.clone(),
        policies: [(policy_name.clone(), policy.clone())].into(),
        tags,
    }
}

/// Tasks of this account's ECS only (confused-deputy protection).
pub(super) fn trust_policy(region: &str, account: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": ["ecs-tasks.amazonaws.com"]},
            "Action": ["sts:AssumeRole"],
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account},
                "ArnLike": {"aws:SourceArn": format!("arn:aws:ecs:{region}:{account}:*")},
            },
        }],
    })
}

pub(super) fn statement(sid: &str, actions: &[&str], resources: Value) -> Value {
    let mut actions = actions.to_vec();
    actions.sort();
    json!({"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources})
}

fn sorted(mut v: Vec<String>) -> Value {
    v.sort();
    v.dedup();
    json!(v)
}

/// The secret itself from an ECS `valueFrom` (which may name a JSON key and version after it).
fn secret_arn(value_from: &str) -> String {
    value_from.split(':').take(7).collect::<Vec<_>>().join(":")
}

/// `(region, account, repository)` of an ECR image reference.
fn ecr_repository(image: &str) -> Option<(String, String, String)> {
    let (host, rest) = image.split_once('/')?;
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() < 6 || parts[1] != "dkr" || parts[2] != "ecr" {
        return None;
    }
    let repo = rest.split(['@', ':']).next()?;
    Some((parts[3].to_string(), parts[0].to_string(), repo.to_string()))
}

/// Pull the image (ECR only), write the container's log group, read the referenced secrets.
fn execution_policy(svc: &Service) -> Value {
    let mut statements = vec![statement(
        "WriteItsLogGroup",
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        json!([reference_to("log-container", "arn_wildcard")]),
    )];
    let (sm, ssm): (Vec<&String>, Vec<&String>) = svc.secrets.values().partition(|v| v.contains(":secretsmanager:"));
    if !sm.is_empty() {
        let arns = sorted(sm.iter().map(|v| secret_arn(v)).collect());
        statements.push(statement("ReadReferencedSecrets", &["secretsmanager:GetSecretValue"], arns));
    }
    if !ssm.is_empty() {
        let arns = sorted(ssm.iter().map(|v| v.to_string()).collect());
        statements.push(statement("ReadReferencedParameters", &["ssm:GetParameters"], arns));
    }
    statements.extend(image_pull(&svc.image));
    json!({"Version": "2012-10-17", "Statement": set(statements)})
}

/// What an execution role needs to pull `image`: nothing for a public registry, that one
/// repository for ECR.
pub(super) fn image_pull(image: &str) -> Vec<Value> {
    let Some((region, account, repo)) = ecr_repository(image) else { return vec![] };
    vec![
        // GetAuthorizationToken takes no resource.
        statement("PullImageToken", &["ecr:GetAuthorizationToken"], json!(["*"])),
        statement(
            "PullImage",
            &["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            json!([format!("arn:aws:ecr:{region}:{account}:repository/{repo}")]),
        ),
    ]
}

/// The service's own queues; with `webhook`: the packager queue (send), the user bucket under
/// the prefix (list, get, put) and the Benchling secret (read).
fn task_policy(spec: &Spec) -> Value {
    let mut statements = vec![statement(
        "OwnQueues",
        &["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessage"],
        set(vec![reference_to(ids::QUEUE, "arn"), reference_to("queue-dlq", "arn")]),
    )];
    if let Some(w) = &spec.webhook {
        statements.push(statement("SendToPackager", &["sqs:SendMessage"], json!([w.packager_queue_arn])));
        let mut list = statement("ListUserPrefix", &["s3:ListBucket"], json!([format!("arn:aws:s3:::{}", w.user_bucket)]));
        list["Condition"] = json!({"StringLike": {"s3:prefix": [format!("{}/*", w.pkg_prefix)]}});
        statements.push(list);
        statements.push(statement(
            "ReadWriteUserPrefix",
            &["s3:GetObject", "s3:PutObject"],
            json!([format!("arn:aws:s3:::{}/{}/*", w.user_bucket, w.pkg_prefix)]),
        ));
        statements.push(statement("ReadBenchlingSecret", &["secretsmanager:GetSecretValue"], json!([secret_arn(&w.benchling_secret_arn)])));
    }
    json!({"Version": "2012-10-17", "Statement": set(statements)})
}

fn capacity_strategy(c: &Capacity) -> Vec<StrategyItem> {
    let item =
        |provider: &str, weight: u32, base: u32| StrategyItem { provider: provider.into(), weight: weight.into(), base: base.into() };
    let mut s = Vec::new();
    if c.fargate_weight > 0 {
        s.push(item("FARGATE", c.fargate_weight, c.fargate_base));
    }
    if c.spot_weight > 0 {
        s.push(item("FARGATE_SPOT", c.spot_weight, 0));
    }
    s
}

/// A Fargate task definition's fixed parts around its roles, image and one container.
pub(super) fn fargate_task(
    family: &str,
    (cpu, memory): (u32, u32),
    [execution_role, task_role]: [&str; 2],
    image: Managed<String>,
    container: Container,
    tags: Managed<TagMap>,
) -> TaskDefinitionFields {
    TaskDefinitionFields {
        family: family.into(),
        cpu: cpu.to_string(),
        memory: memory.to_string(),
        network_mode: "awsvpc".into(),
        requires: vec!["FARGATE".into()],
        execution_role: Ref::attr(execution_role, "arn"),
        task_role: Ref::attr(task_role, "arn"),
        image,
        volumes: container.mounts.iter().map(|m| m.volume.clone()).collect(),
        container,
        tags,
    }
}

/// A container's fixed parts: essential, read-only root, logs to the log group `log_group`
/// (a node id) under its own name.
pub(super) fn base_container(name: &str, log_group: &str, region: &str) -> Container {
    Container {
        name: name.into(),
        command: vec![],
        port: 0,
        protocol: "tcp".into(),
        environment: vec![],
        secrets: vec![],
        log: Some(Log { driver: "awslogs".into(), group: Ref::attr(log_group, "name"), region: region.into(), prefix: name.into() }),
        health_check: None,
        user: String::new(),
        read_only_root: true,
        mounts: vec![],
        stop_timeout: 0,
        essential: true,
    }
}

fn task_definition(spec: &Spec, svc: &Service, tags: TagMap) -> TaskDefinitionFields {
    let stack = &spec.name;
    // Wired values first; the spec's own variables cannot collide (validation refuses it).
    let mut env: Vec<EnvVar> = vec![
        env_var("AWS_REGION", spec.region.clone()),
        env_var("PORT", svc.port.to_string()),
        env_var("QUEUE_URL", Ref::attr(ids::QUEUE, "url")),
        env_var("DEAD_LETTER_QUEUE_URL", Ref::attr("queue-dlq", "url")),
    ];
    if spec.api.is_some() {
        // The header the integration overwrites with the caller's address (desired/edge.rs).
        env.push(env_var("WEBHOOK_CLIENT_IP_HEADER", super::edge::CLIENT_IP_HEADER));
    }
    if let Some(w) = &spec.webhook {
        env.push(env_var("BENCHLING_SECRET", &w.benchling_secret_arn));
        if let Some((region, account, name)) = crate::spec::sqs_arn_parts(&w.packager_queue_arn) {
            env.push(env_var("PACKAGER_SQS_URL", format!("https://sqs.{region}.amazonaws.com/{account}/{name}")));
        }
        if let Some(h) = &w.quilt_web_host {
            env.push(env_var("QUILT_WEB_HOST", h));
        }
        if let Some(d) = &w.athena_user_database {
            env.push(env_var("ATHENA_USER_DATABASE", d));
        }
    }
    env.extend(svc.environment.iter().map(|(k, v)| env_var(k, v)));
    env.sort_by(|a, b| a.name.cmp(&b.name));
    let container = Container {
        command: vec!["serve".into(), "--with-worker".into()],
        port: svc.port.into(),
        environment: env,
        secrets: svc.secrets.iter().map(|(name, arn)| SecretRef { name: name.clone(), value_from: arn.clone() }).collect(),
        // The image has no shell or curl: the binary checks its own readiness, which ECS
        // turns into the Cloud Map health that API Gateway routes by.
        health_check: Some(HealthCheck {
            command: ["CMD", "/benchling-webhook", "healthcheck"].map(String::from).to_vec(),
            interval: 30,
            timeout: 5,
            retries: 3,
            start_period: 15,
        }),
        user: "1000".into(),
        mounts: vec![Mount { volume: SCRATCH.into(), path: "/tmp".into(), read_only: false }],
        stop_timeout: svc.stop_timeout_seconds.into(),
        ..base_container(CONTAINER, "log-container", &spec.region)
    };
    // With `track-live`, the pipeline registers the live revisions, with its own tags: the
    // image and ours go on the revisions the reconciler registers and are not compared afterwards.
    let (image, tags) = match svc.image_policy {
        ImagePolicy::Pinned => (Managed::Is(svc.image.clone()), Managed::Is(tags)),
        ImagePolicy::TrackLive => (Managed::Initial(svc.image.clone()), Managed::Initial(tags)),
    };
    fargate_task(stack, (svc.cpu, svc.memory), ["role-execution", "role-task"], image, container, tags)
}

fn env_var(name: &str, value: impl Into<Ref>) -> EnvVar {
    EnvVar { name: name.into(), value: value.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `service.image` from the spec to the container definition RegisterTaskDefinition sends:
    /// a typed field at every step but the engine's generic diff (JSON, read back by the kind).
    #[test]
    fn the_spec_s_image_reaches_the_container_definition_typed() {
        use crate::engine::{fields::typed, for_create, resolve, Identity};
        use crate::resources::ecs::container_definition;
        let spec = crate::spec::load(&crate::spec::shipped("../specs/prod.yaml")).unwrap();
        let facts = crate::desired::Facts::in_zones("ab");
        let svc = spec.service.clone().unwrap();
        let built = task_definition(&spec, &svc, TagMap::new());
        assert_eq!(built.image, Managed::Is(svc.image.clone()));
        let state = crate::desired::build(&spec, &facts).unwrap();
        let node = state.resources.iter().find(|r| r.id == ids::TASK_DEFINITION).unwrap();
        let ids: std::collections::BTreeMap<String, Identity> = state
            .resources
            .iter()
            .map(|d| (d.id.clone(), Identity::id(format!("{}-id", d.id)).with("arn", "arn:x").with("name", "n").with("url", "u")))
            .collect();
        let resolved = match resolve(&serde_json::Value::Object(node.fields.clone()), &ids) {
            serde_json::Value::Object(m) => m,
            other => panic!("{other}"),
        };
        let received: TaskDefinitionFields = typed("ecs:task-definition", &for_create(&resolved)).unwrap();
        let sent = container_definition(&received.container, &received.image).unwrap();
        assert_eq!(sent.image(), Some(svc.image.as_str()));
    }

    #[test]
    fn ecr_images_are_recognised() {
        assert_eq!(
            ecr_repository("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/webhook:1.2"),
            Some(("eu-west-1".into(), "123456789012".into(), "team/webhook".into()))
        );
        assert_eq!(ecr_repository("123456789012.dkr.ecr.us-east-1.amazonaws.com/w@sha256:ab").map(|r| r.2), Some("w".into()));
        assert_eq!(ecr_repository("public.ecr.aws/example/benchling-webhook:0.1.0"), None);
        assert_eq!(ecr_repository("nginx"), None);
    }

    #[test]
    fn secret_arns_drop_json_keys() {
        assert_eq!(
            secret_arn("arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf:client_secret::"),
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf"
        );
        assert_eq!(secret_arn("arn:aws:secretsmanager:us-east-1:1:secret:x"), "arn:aws:secretsmanager:us-east-1:1:secret:x");
    }

    #[test]
    fn capacity_strategy_leaves_out_zero_weights() {
        assert_eq!(json!(capacity_strategy(&Capacity::default())), json!([{"provider": "FARGATE", "weight": 1, "base": 0}]));
        let c = Capacity { fargate_weight: 1, spot_weight: 3, fargate_base: 2 };
        assert_eq!(capacity_strategy(&c).len(), 2);
        let spot_only = Capacity { fargate_weight: 0, spot_weight: 1, fargate_base: 0 };
        assert_eq!(json!(capacity_strategy(&spot_only)), json!([{"provider": "FARGATE_SPOT", "weight": 1, "base": 0}]));
    }
}
