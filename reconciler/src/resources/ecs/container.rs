//! The task definition's one container: its normalised shape (what desired state builds and
//! observe reports), and the mapping to and from the API's `ContainerDefinition`, where ECS's
//! documented defaults are filled in so that AWS's echo compares equal to what was sent.

use super::int;
use crate::engine::Ref;
use aws_sdk_ecs::types::{
    ContainerDefinition, HealthCheck as ApiHealthCheck, KeyValuePair, LogConfiguration, LogDriver, MountPoint, PortMapping, Secret,
    TransportProtocol,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The one container, normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub name: String,
    pub command: Vec<String>,
    /// The container port (0: no port mapping); under awsvpc the host port always equals it.
    pub port: u64,
    pub protocol: String,
    /// Sorted by name.
    pub environment: Vec<EnvVar>,
    /// Sorted by name.
    pub secrets: Vec<SecretRef>,
    /// null: no log configuration.
    pub log: Option<Log>,
    /// null: no container health check.
    pub health_check: Option<HealthCheck>,
    /// "" when unset.
    pub user: String,
    pub read_only_root: bool,
    /// Sorted.
    pub mounts: Vec<Mount>,
    pub stop_timeout: u64,
    pub essential: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub value: Ref,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    pub value_from: String,
}

/// awslogs options; a missing option is "".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub driver: String,
    pub group: Ref,
    pub region: String,
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub command: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
    pub retries: u64,
    pub start_period: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
}

impl Container {
    /// Sets sorted, so that order never shows as a change (desired state sorts the same way).
    pub fn normalised(mut self) -> Self {
        self.environment.sort();
        self.secrets.sort();
        self.mounts.sort();
        self
    }
}

// ECS's documented defaults for what a container definition leaves out.
const HEALTH_INTERVAL: u64 = 30;
const HEALTH_TIMEOUT: u64 = 5;
const HEALTH_RETRIES: u64 = 3;
const HEALTH_START_PERIOD: u64 = 0;
/// Fargate's stop timeout when none is given.
const STOP_TIMEOUT: u64 = 30;

fn n(v: Option<i32>, default: u64) -> u64 {
    v.map(|x| x.max(0) as u64).unwrap_or(default)
}

/// The comparable shape of a live container definition, AWS defaults filled in.
pub fn container_of(c: &ContainerDefinition) -> Container {
    let mapping = c.port_mappings().first();
    let log = c.log_configuration().map(|l| {
        let opt = |k: &str| l.options().and_then(|o| o.get(k)).cloned().unwrap_or_default();
        Log {
            driver: l.log_driver().as_str().to_string(),
            group: opt("awslogs-group").into(),
            region: opt("awslogs-region"),
            prefix: opt("awslogs-stream-prefix"),
        }
    });
    Container {
        name: c.name().unwrap_or_default().to_string(),
        command: c.command().to_vec(),
        port: mapping.and_then(|m| m.container_port()).map(|p| p.max(0) as u64).unwrap_or(0),
        protocol: mapping.and_then(|m| m.protocol()).map(|p| p.as_str().to_string()).unwrap_or_else(|| "tcp".into()),
        environment: c
            .environment()
            .iter()
            .map(|e| EnvVar { name: e.name().unwrap_or_default().to_string(), value: e.value().unwrap_or_default().to_string().into() })
            .collect(),
        secrets: c.secrets().iter().map(|s| SecretRef { name: s.name().to_string(), value_from: s.value_from().to_string() }).collect(),
        log,
        health_check: c.health_check().map(|h| HealthCheck {
            command: h.command().to_vec(),
            interval: n(h.interval(), HEALTH_INTERVAL),
            timeout: n(h.timeout(), HEALTH_TIMEOUT),
            retries: n(h.retries(), HEALTH_RETRIES),
            start_period: n(h.start_period(), HEALTH_START_PERIOD),
        }),
        user: c.user().unwrap_or_default().to_string(),
        read_only_root: c.readonly_root_filesystem().unwrap_or(false),
        mounts: c
            .mount_points()
            .iter()
            .map(|m| Mount {
                volume: m.source_volume().unwrap_or_default().to_string(),
                path: m.container_path().unwrap_or_default().to_string(),
                read_only: m.read_only().unwrap_or(false),
            })
            .collect(),
        stop_timeout: n(c.stop_timeout(), STOP_TIMEOUT),
        essential: c.essential().unwrap_or(true),
    }
    .normalised()
}

/// The normalised `container` field of a live container definition.
pub fn container_fields(c: &ContainerDefinition) -> Value {
    serde_json::to_value(container_of(c)).expect("container serialises")
}

/// The API form of the container (what RegisterTaskDefinition sends).
pub fn container_definition(c: &Container, image: &str) -> anyhow::Result<ContainerDefinition> {
    let mut d = ContainerDefinition::builder()
        .name(&c.name)
        .image(image)
        .essential(c.essential)
        .readonly_root_filesystem(c.read_only_root)
        .stop_timeout(int("stop_timeout", c.stop_timeout)?)
        .set_command((!c.command.is_empty()).then(|| c.command.clone()))
        .set_environment(Some(c.environment.iter().map(|e| KeyValuePair::builder().name(&e.name).value(&e.value).build()).collect()))
        .set_secrets(Some(
            c.secrets.iter().map(|s| Secret::builder().name(&s.name).value_from(&s.value_from).build()).collect::<Result<_, _>>()?,
        ))
        .set_mount_points(Some(
            c.mounts
                .iter()
                .map(|m| MountPoint::builder().source_volume(&m.volume).container_path(&m.path).read_only(m.read_only).build())
                .collect(),
        ));
    if c.port != 0 {
        let port = int("port", c.port)?;
        d = d.port_mappings(
            PortMapping::builder().container_port(port).host_port(port).protocol(TransportProtocol::from(c.protocol.as_str())).build(),
        );
    }
    if !c.user.is_empty() {
        d = d.user(&c.user);
    }
    if let Some(l) = &c.log {
        let mut b = LogConfiguration::builder().log_driver(LogDriver::from(l.driver.as_str()));
        for (k, v) in [("awslogs-group", l.group.as_str()), ("awslogs-region", &l.region), ("awslogs-stream-prefix", &l.prefix)] {
            if !v.is_empty() {
                b = b.options(k, v);
            }
        }
        d = d.log_configuration(b.build()?);
    }
    if let Some(h) = &c.health_check {
        d = d.health_check(
            ApiHealthCheck::builder()
                .set_command(Some(h.command.clone()))
                .interval(int("health_check.interval", h.interval)?)
                .timeout(int("health_check.timeout", h.timeout)?)
                .retries(int("health_check.retries", h.retries)?)
                .start_period(int("health_check.start_period", h.start_period)?)
                .build()?,
        );
    }
    Ok(d.build())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// The container as desired state builds it.
    pub(crate) fn desired() -> Value {
        json!({
            "name": "app",
            "command": ["service", "serve"],
            "port": 8080,
            "protocol": "tcp",
            "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "secrets": [{"name": "S", "value_from": "arn:aws:secretsmanager:us-east-1:1:secret:s"}],
            "log": {"driver": "awslogs", "group": "/ecs/demo", "region": "us-east-1", "prefix": "app"},
            "health_check": {"command": ["CMD", "/app/service", "healthcheck"], "interval": 30, "timeout": 5, "retries": 3, "start_period": 0},
            "user": "10001",
            "read_only_root": true,
            "mounts": [{"volume": "tmp", "path": "/tmp", "read_only": false}],
            "stop_timeout": 30,
            "essential": true
        })
    }

    /// What AWS echoes for the definition registered from `desired()`: defaults filled in
    /// (cpu 0, essential, protocol, hostPort), health check timings left out, environment
    /// in another order, response-only empty lists.
    pub(crate) fn echo() -> aws_sdk_ecs::types::builders::ContainerDefinitionBuilder {
        ContainerDefinition::builder()
            .name("app")
            .image("r/i:1")
            .cpu(0)
            .essential(true)
            .command("service")
            .command("serve")
            .port_mappings(PortMapping::builder().container_port(8080).host_port(8080).protocol(TransportProtocol::Tcp).build())
            .environment(KeyValuePair::builder().name("B").value("2").build())
            .environment(KeyValuePair::builder().name("A").value("1").build())
            .secrets(Secret::builder().name("S").value_from("arn:aws:secretsmanager:us-east-1:1:secret:s").build().unwrap())
            .set_volumes_from(Some(vec![]))
            .mount_points(MountPoint::builder().source_volume("tmp").container_path("/tmp").read_only(false).build())
            .log_configuration(
                LogConfiguration::builder()
                    .log_driver(LogDriver::Awslogs)
                    .options("awslogs-group", "/ecs/demo")
                    .options("awslogs-region", "us-east-1")
                    .options("awslogs-stream-prefix", "app")
                    .build()
                    .unwrap(),
            )
            .health_check(ApiHealthCheck::builder().command("CMD").command("/app/service").command("healthcheck").build().unwrap())
            .user("10001")
            .readonly_root_filesystem(true)
            .stop_timeout(30)
    }

    #[test]
    fn aws_echo_with_defaults_and_reordering_equals_desired() {
        assert_eq!(container_fields(&echo().build()), desired());
    }

    #[test]
    fn defaults_are_filled_when_aws_leaves_them_out() {
        // No essential flag, no protocol or host port, a minimal mount, no stop timeout.
        let c = echo()
            .set_essential(None)
            .set_port_mappings(Some(vec![PortMapping::builder().container_port(8080).build()]))
            .set_mount_points(Some(vec![MountPoint::builder().source_volume("tmp").container_path("/tmp").build()]))
            .set_stop_timeout(None)
            .build();
        assert_eq!(container_fields(&c), desired());
    }

    #[test]
    fn explicit_health_check_timings_are_kept() {
        let c = echo()
            .health_check(
                ApiHealthCheck::builder()
                    .command("CMD")
                    .command("/app/service")
                    .command("healthcheck")
                    .interval(10)
                    .timeout(2)
                    .retries(5)
                    .start_period(15)
                    .build()
                    .unwrap(),
            )
            .build();
        assert_eq!(
            container_fields(&c)["health_check"],
            json!({"command": ["CMD", "/app/service", "healthcheck"], "interval": 10, "timeout": 2, "retries": 5, "start_period": 15})
        );
    }

    #[test]
    fn a_removed_health_check_is_a_difference() {
        let c = echo().set_health_check(None).build();
        let live = container_fields(&c);
        assert_eq!(live["health_check"], Value::Null);
        assert_ne!(live, desired());
    }

    #[test]
    fn emptied_lists_and_removed_settings_are_differences() {
        let c = echo().set_environment(None).set_secrets(None).set_mount_points(None).set_log_configuration(None).set_user(None).build();
        let live = container_fields(&c);
        assert_eq!(live["environment"], json!([]));
        assert_eq!(live["secrets"], json!([]));
        assert_eq!(live["mounts"], json!([]));
        assert_eq!(live["log"], Value::Null);
        assert_eq!(live["user"], "");
        assert_eq!(live["read_only_root"], true);
        let bare = container_fields(&ContainerDefinition::builder().name("x").build());
        assert_eq!(bare["essential"], true);
        assert_eq!(bare["read_only_root"], false);
        assert_eq!(bare["port"], 0);
        assert_eq!(bare["protocol"], "tcp");
        assert_eq!(bare["command"], json!([]));
    }

    #[test]
    fn the_registered_definition_normalises_back_to_the_desired_shape() {
        let c: Container = serde_json::from_value(desired()).unwrap();
        let api = container_definition(&c, "r/i:1").unwrap();
        assert_eq!(api.image(), Some("r/i:1"));
        assert_eq!(api.port_mappings()[0].host_port(), Some(8080));
        assert_eq!(container_fields(&api), desired());
        // Environment given unsorted is sent as given but compares sorted.
        let mut unsorted = c.clone();
        unsorted.environment.reverse();
        assert_eq!(container_fields(&container_definition(&unsorted, "x").unwrap()), desired());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn word() -> impl Strategy<Value = String> {
            "[A-Za-z0-9_./:-]{0,10}"
        }

        /// Any container desired state can build (ECS's bounds: ports, health check timings,
        /// stop timeout), in any order.
        fn container() -> impl Strategy<Value = Container> {
            let port = prop_oneof![Just((0u64, "tcp")), (1..=65535u64, prop_oneof![Just("tcp"), Just("udp")])];
            let log = prop::option::of((word(), word(), word()).prop_map(|(group, region, prefix)| Log {
                driver: "awslogs".into(),
                group: group.into(),
                region,
                prefix,
            }));
            let health = prop::option::of((prop::collection::vec(word(), 1..4), 5..=300u64, 2..=60u64, 1..=10u64, 0..=300u64).prop_map(
                |(command, interval, timeout, retries, start_period)| HealthCheck { command, interval, timeout, retries, start_period },
            ));
            let env = prop::collection::vec((word(), word()).prop_map(|(name, value)| EnvVar { name, value: value.into() }), 0..4);
            let secrets = prop::collection::vec((word(), word()).prop_map(|(name, value_from)| SecretRef { name, value_from }), 0..4);
            let mounts = prop::collection::vec(
                (word(), word(), any::<bool>()).prop_map(|(volume, path, read_only)| Mount { volume, path, read_only }),
                0..3,
            );
            let rest = (
                "[a-z]{1,8}",
                prop::collection::vec(word(), 0..3),
                prop_oneof![Just(String::new()), "[0-9]{1,5}"],
                any::<bool>(),
                2..=120u64,
                any::<bool>(),
            );
            (port, log, health, env, secrets, mounts, rest).prop_map(
                |(
                    (port, protocol),
                    log,
                    health_check,
                    environment,
                    secrets,
                    mounts,
                    (name, command, user, read_only_root, stop_timeout, essential),
                )| Container {
                    name,
                    command,
                    port,
                    protocol: protocol.into(),
                    environment,
                    secrets,
                    log,
                    health_check,
                    user,
                    read_only_root,
                    mounts,
                    stop_timeout,
                    essential,
                },
            )
        }

        /// What DescribeTaskDefinition returns for a registered container, per ECS's documented
        /// behaviour: lists in any order (`turn`), empty lists left out or empty, defaults left
        /// out or filled in (`omit`: essential, read-only root, stop timeout, health check
        /// timings, the port mapping's protocol and host port), `cpu` 0 added.
        fn aws_echo(sent: &ContainerDefinition, turn: usize, omit: bool) -> ContainerDefinition {
            fn turned<T: Clone>(v: &Option<Vec<T>>, turn: usize, omit: bool) -> Option<Vec<T>> {
                let mut v = v.clone().unwrap_or_default();
                if v.is_empty() {
                    return (!omit).then_some(v);
                }
                if turn % 2 == 1 {
                    v.reverse();
                }
                let by = (turn / 2) % v.len();
                v.rotate_left(by);
                Some(v)
            }
            let mut e = sent.clone();
            e.cpu = 0;
            e.environment = turned(&sent.environment, turn, omit);
            e.secrets = turned(&sent.secrets, turn, omit);
            e.mount_points = turned(&sent.mount_points, turn, omit);
            e.volumes_from = (!omit).then(Vec::new);
            if omit {
                let unless = |v: Option<i32>, default: u64| v.filter(|x| *x as u64 != default);
                e.essential = e.essential.filter(|x| !x);
                e.readonly_root_filesystem = e.readonly_root_filesystem.filter(|x| *x);
                e.stop_timeout = unless(e.stop_timeout, STOP_TIMEOUT);
                if let Some(h) = e.health_check.as_mut() {
                    h.interval = unless(h.interval, HEALTH_INTERVAL);
                    h.timeout = unless(h.timeout, HEALTH_TIMEOUT);
                    h.retries = unless(h.retries, HEALTH_RETRIES);
                    h.start_period = unless(h.start_period, HEALTH_START_PERIOD);
                }
                for m in e.port_mappings.iter_mut().flatten() {
                    m.host_port = None;
                    if m.protocol == Some(TransportProtocol::Tcp) {
                        m.protocol = None;
                    }
                }
            }
            e
        }

        proptest! {
            /// #23 §2: what is registered, as ECS describes it back, normalises to what desired
            /// state built: no drift from AWS's defaulting or ordering.
            #[test]
            fn the_echo_of_any_container_normalises_to_it(c in container(), turn in 0..8usize, omit in any::<bool>()) {
                let sent = container_definition(&c, "r/i:1").unwrap();
                prop_assert_eq!(container_of(&aws_echo(&sent, turn, omit)), c.normalised());
            }
        }
    }
}
