//! The service section and what it needs to run: the container's log group, the webhook's
//! FIFO queue and dead-letter queue, the task execution and task roles (least privilege,
//! generated from the spec and the reconciled ARNs), the ECS cluster, task definition and
//! Fargate service (registered in Cloud Map), and Application Auto Scaling.
//!
//! Policy documents are built in canonical form (every Action and Resource a sorted list,
//! statements a set), the form the IAM kind normalises live documents to, so that order and
//! formatting never show as drift.

use super::{obj, Builder};
use crate::engine::{initial, reference, reference_to, set, within};
use crate::ids;
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

    b.add_with_policy(
        "logs:log-group",
        "log-container",
        obj(json!({"name": container_log_group(&stack), "retention_days": svc.logs.retention_days})),
        &[],
        svc.logs.deletion_policy,
    );

    let q = &spec.queue;
    let queue = |name: String, redrive: Value| {
        obj(json!({
            "name": name,
            "fifo": true,
            // The service sets the deduplication id (the webhook id) itself.
            "content_based_dedup": false,
            "visibility_timeout": q.visibility_timeout_seconds,
            "retention": q.retention_seconds,
            "sse": true,
            "redrive": redrive,
        }))
    };
    // The dead-letter queue keeps messages the longest SQS allows, to leave time to look.
    let mut dlq = queue(dead_letter_queue_name(&stack), Value::Null);
    dlq.insert("retention".into(), json!(1_209_600));
    b.add_with_policy("sqs:queue", "queue-dlq", dlq, &[], q.deletion_policy);
    let redrive = json!({"dead_letter_arn": reference_to("queue-dlq", "arn"), "max_receive_count": q.max_receive_count});
    b.add_with_policy("sqs:queue", ids::QUEUE, queue(queue_name(&stack), redrive), &[], q.deletion_policy);

    let trust = trust_policy(&spec.region, &b.facts.account);
    b.add(
        "iam:role",
        "role-execution",
        obj(json!({
            "name": format!("{stack}-execution"),
            "path": role_path(&stack),
            "trust": trust,
            "policies": {"execution": execution_policy(&svc)},
        })),
        &[],
    );
    b.add(
        "iam:role",
        "role-task",
        obj(json!({
            "name": format!("{stack}-task"),
            "path": role_path(&stack),
            "trust": trust,
            "policies": {"task": task_policy(spec)},
        })),
        &[],
    );

    let strategy = capacity_strategy(&svc.capacity);
    b.add(
        "ecs:cluster",
        ids::CLUSTER,
        obj(json!({
            "name": svc.cluster,
            "container_insights": "enabled",
            "capacity_providers": ["FARGATE", "FARGATE_SPOT"],
            "default_strategy": strategy,
        })),
        &[],
    );

    b.add("ecs:task-definition", ids::TASK_DEFINITION, task_definition(spec, &svc), &[]);
    if svc.image_policy == ImagePolicy::TrackLive {
        // The pipeline registers the live revisions, with its own tags: ours go on the
        // revisions the reconciler registers and are not compared afterwards.
        if let Some(td) = b.out.last_mut() {
            let tags = td.fields.remove("tags").unwrap_or_default();
            td.fields.insert("tags".into(), initial(tags));
        }
    }

    let registry = match &spec.discovery {
        Some(_) => json!({"arn": reference_to(ids::DISCOVERY_SERVICE, "arn"), "container_name": CONTAINER, "container_port": svc.port}),
        None => Value::Null,
    };
    // With autoscaling, the live count belongs to it: set on create, drift only outside [min, max].
    let desired_count = match &spec.scaling {
        Some(sc) => within(sc.min as u64, sc.max as u64, svc.desired_count as u64),
        None => json!(svc.desired_count),
    };
    let egress = b.private_egress();
    b.add(
        "ecs:service",
        ids::SERVICE,
        obj(json!({
            "name": stack,
            "cluster_name": svc.cluster,
            "cluster": reference_to(ids::CLUSTER, "arn"),
            "task_definition": reference_to(ids::TASK_DEFINITION, "arn"),
            "desired_count": desired_count,
            "capacity_strategy": strategy,
            "subnets": set(private_subnets.iter().map(|s| reference(s)).collect()),
            "security_groups": set(vec![reference("sg-service")]),
            "assign_public_ip": false,
            "registry": registry,
            "circuit_breaker": true,
            "min_healthy_percent": 100,
            "max_percent": 200,
            "health_check_grace": svc.health_check_grace_seconds,
            "propagate_tags": "SERVICE",
            "managed_tags": true,
        })),
        &egress.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    if let Some(sc) = &spec.scaling {
        let resource_id = format!("service/{}/{stack}", svc.cluster);
        b.add_untagged(
            "application-autoscaling:scalable-target",
            "scaling-target",
            obj(json!({"resource_id": resource_id, "dimension": "ecs:service:DesiredCount", "min": sc.min, "max": sc.max})),
            &["service"],
        );
        for (id, suffix, metric, target) in [
            ("scaling-cpu", "cpu", "ECSServiceAverageCPUUtilization", sc.cpu_target),
            ("scaling-memory", "memory", "ECSServiceAverageMemoryUtilization", sc.memory_target),
        ] {
            let Some(target) = target else { continue };
            b.add_untagged(
                "application-autoscaling:scaling-policy",
                id,
                obj(json!({
                    "name": format!("{stack}-{suffix}"),
                    "resource_id": resource_id,
                    "metric": metric,
                    "target": target as f64,
                    "scale_in_cooldown": sc.scale_in_cooldown,
                    "scale_out_cooldown": sc.scale_out_cooldown,
                })),
                &["scaling-target"],
            );
        }
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

fn capacity_strategy(c: &Capacity) -> Value {
    let mut s = vec![json!({"provider": "FARGATE", "weight": c.fargate_weight, "base": c.fargate_base})];
    if c.spot_weight > 0 {
        s.push(json!({"provider": "FARGATE_SPOT", "weight": c.spot_weight, "base": 0}));
    }
    if c.fargate_weight == 0 {
        s.remove(0);
    }
    json!(s)
}

fn task_definition(spec: &Spec, svc: &Service) -> crate::engine::Fields {
    let stack = &spec.name;
    // Wired values first; the spec's own variables cannot collide (validation refuses it).
    let mut env: Vec<(String, Value)> = vec![
        ("AWS_REGION".into(), json!(spec.region)),
        ("PORT".into(), json!(svc.port.to_string())),
        ("QUEUE_URL".into(), reference_to(ids::QUEUE, "url")),
        ("DEAD_LETTER_QUEUE_URL".into(), reference_to("queue-dlq", "url")),
    ];
    if spec.api.is_some() {
        // The header the integration overwrites with the caller's address (desired/edge.rs).
        env.push(("WEBHOOK_CLIENT_IP_HEADER".into(), json!(super::edge::CLIENT_IP_HEADER)));
    }
    if let Some(w) = &spec.webhook {
        env.push(("BENCHLING_SECRET".into(), json!(w.benchling_secret_arn)));
        if let Some((region, account, name)) = crate::spec::sqs_arn_parts(&w.packager_queue_arn) {
            env.push(("PACKAGER_SQS_URL".into(), json!(format!("https://sqs.{region}.amazonaws.com/{account}/{name}"))));
        }
        if let Some(h) = &w.quilt_web_host {
            env.push(("QUILT_WEB_HOST".into(), json!(h)));
        }
        if let Some(d) = &w.athena_user_database {
            env.push(("ATHENA_USER_DATABASE".into(), json!(d)));
        }
    }
    env.extend(svc.environment.iter().map(|(k, v)| (k.clone(), json!(v))));
    env.sort_by(|a, b| a.0.cmp(&b.0));
    let environment: Vec<Value> = env.into_iter().map(|(name, value)| json!({"name": name, "value": value})).collect();
    let secrets: Vec<Value> = svc.secrets.iter().map(|(name, arn)| json!({"name": name, "value_from": arn})).collect();
    let image = match svc.image_policy {
        ImagePolicy::Pinned => json!(svc.image),
        ImagePolicy::TrackLive => initial(json!(svc.image)),
    };
    obj(json!({
        "family": stack,
        "cpu": svc.cpu.to_string(),
        "memory": svc.memory.to_string(),
        "network_mode": "awsvpc",
        "requires": ["FARGATE"],
        "execution_role": reference_to("role-execution", "arn"),
        "task_role": reference_to("role-task", "arn"),
        "image": image,
        "volumes": [SCRATCH],
        "container": {
            "name": CONTAINER,
            "command": ["serve", "--with-worker"],
            "port": svc.port,
            "protocol": "tcp",
            "environment": environment,
            "secrets": secrets,
            "log": {"driver": "awslogs", "group": reference_to("log-container", "name"), "region": spec.region, "prefix": CONTAINER},
            // The image has no shell or curl: the binary checks its own readiness, which ECS
            // turns into the Cloud Map health that API Gateway routes by.
            "health_check": {"command": ["CMD", "/benchling-webhook", "healthcheck"], "interval": 30, "timeout": 5, "retries": 3, "start_period": 15},
            "user": "1000",
            "read_only_root": true,
            "mounts": [{"volume": SCRATCH, "path": "/tmp", "read_only": false}],
            "stop_timeout": svc.stop_timeout_seconds,
            "essential": true,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(capacity_strategy(&Capacity::default()), json!([{"provider": "FARGATE", "weight": 1, "base": 0}]));
        let c = Capacity { fargate_weight: 1, spot_weight: 3, fargate_base: 2 };
        assert_eq!(capacity_strategy(&c).as_array().unwrap().len(), 2);
        let spot_only = Capacity { fargate_weight: 0, spot_weight: 1, fargate_base: 0 };
        assert_eq!(capacity_strategy(&spot_only), json!([{"provider": "FARGATE_SPOT", "weight": 1, "base": 0}]));
    }
}
