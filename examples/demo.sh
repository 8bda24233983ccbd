#!/usr/bin/env bash
# `make demo`: the whole loop on a local AWS emulator, from a fresh machine.
#   installs moto (pinned, into .venv) → starts it on 127.0.0.1 → apply specs/prod.yaml (the
#   network, IAM roles, logs, queues, Cloud Map, ECS, autoscaling, and the HTTP API edge: VPC
#   link, API, integration, routes, stage), which prints the webhook URLs → no-op plan → drift
#   injected out of band in the network, the service and the edge → plan names it (exit 2) →
#   apply corrects it → plan is clean again → verify names the broken hop (moto runs no tasks)
#   → a signed webhook through the service binary → destroy (the container log group and the
#   queues are retained, as the spec says).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
: "${CARGO_TARGET_DIR:=$root/target}"
R="$CARGO_TARGET_DIR/debug/reconciler"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "installing the local AWS emulator (moto, pinned) if needed"
moto_server="$(bash tests/emulator/install-moto.sh)"
venv="$(dirname "$(dirname "$moto_server")")"

step "building the reconciler"
cargo build --workspace --quiet

port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp -t moto-demo.XXXXXX.log)"
step "starting moto on 127.0.0.1:$port (log: $log)"
MOTO_IAM_LOAD_MANAGED_POLICIES=true "$venv/bin/python" tests/emulator/moto-aws.py -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
# moto builds a REST service's router on its first request, and two first requests at once can
# race (HTTP 500): one request to each REST service first, one after the other
# (tests/support/mod.rs does the same).
for svc in "apigateway /v2/apis" "scheduler /schedule-groups" "s3 /"; do
  set -- $svc
  curl -s -o /dev/null -H "Authorization: AWS4-HMAC-SHA256 Credential=demo/20260101/us-east-1/$1/aws4_request, SignedHeaders=host, Signature=0" \
    "http://127.0.0.1:$port$2" || true
done
# The stack lock's bucket (specs/prod.yaml `lock:`): the operator creates it once, the stack
# does not own it (on AWS: aws s3 mb s3://benchling-webhook-ops).
step "creating the lock bucket benchling-webhook-ops (the operator's, once)"
curl -sf -o /dev/null -X PUT -H "Authorization: AWS4-HMAC-SHA256 Credential=demo/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0" \
  "http://127.0.0.1:$port/benchling-webhook-ops"

export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
  AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null RECONCILER_POLL_INTERVAL=0.1 \
  RECONCILER_WAIT_FOR_DEPLOYMENTS=false  # moto runs no tasks: ECS deployments never settle

expect_exit() { # expect_exit CODE cmd...
  local want=$1; shift
  set +e; "$@"; local got=$?; set -e
  if [ "$got" != "$want" ]; then echo "demo: expected exit $want from '$*', got $got" >&2; exit 1; fi
}

step "reconciler apply specs/prod.yaml --auto-approve"
"$R" apply specs/prod.yaml --auto-approve

step "reconciler plan specs/prod.yaml --detailed-exitcode   (expect: no changes, exit 0)"
expect_exit 0 "$R" plan specs/prod.yaml --detailed-exitcode

step "reconciler output specs/prod.yaml --format json   (the URLs for the Benchling app manifest; only reads)"
"$R" output specs/prod.yaml --format json

step "injecting drift out of band: a private default route deleted, port 22 opened to 0.0.0.0/0, the container log retention cut to 1 day, the dead-letter redrive removed, the service scaled to 20 tasks"
"$venv/bin/python" - <<'PY'
import boto3
ec2 = boto3.client("ec2")
f = lambda k, v: [{"Name": f"tag:{k}", "Values": [v]}]
rt = ec2.describe_route_tables(Filters=f("reconciler:id", "rt-private-1"))["RouteTables"][0]["RouteTableId"]
ec2.delete_route(RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0")
sg = ec2.describe_security_groups(Filters=f("reconciler:id", "sg-service"))["SecurityGroups"][0]["GroupId"]
ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
print(f"deleted 0.0.0.0/0 from {rt}; opened tcp/22 to the world on {sg}")
logs = boto3.client("logs")
logs.put_retention_policy(logGroupName="/ecs/benchling-webhook", retentionInDays=1)
sqs = boto3.client("sqs")
url = sqs.get_queue_url(QueueName="benchling-webhook-events.fifo")["QueueUrl"]
sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": ""})
ecs = boto3.client("ecs")
ecs.update_service(cluster="benchling-webhook-cluster", service="benchling-webhook", desiredCount=20)
print("log retention 1 day; redrive removed from", url, "; desiredCount 20 (autoscaling allows 2..10)")
apigw = boto3.client("apigatewayv2")
api = apigw.get_apis()["Items"][0]["ApiId"]
route = next(r for r in apigw.get_routes(ApiId=api)["Items"] if r["RouteKey"] == "ANY /{proxy+}")
apigw.delete_route(ApiId=api, RouteId=route["RouteId"])
integration = apigw.get_integrations(ApiId=api)["Items"][0]["IntegrationId"]
apigw.update_integration(ApiId=api, IntegrationId=integration,
                         IntegrationUri="arn:aws:servicediscovery:us-east-1:123456789012:service/srv-elsewhere")
print(f"API {api}: route ANY /{{proxy+}} deleted; the integration pointed at another Cloud Map service")
PY

step "reconciler plan specs/prod.yaml --detailed-exitcode   (expect: the drift, named, exit 2)"
expect_exit 2 "$R" plan specs/prod.yaml --detailed-exitcode

step "reconciler apply specs/prod.yaml --auto-approve   (corrects only the difference)"
"$R" apply specs/prod.yaml --auto-approve

step "reconciler plan specs/prod.yaml --detailed-exitcode   (expect: clean again, exit 0)"
expect_exit 0 "$R" plan specs/prod.yaml --detailed-exitcode

step "reconciler verify specs/prod.yaml   (expect: not ready, exit 1: moto has no data plane and runs no tasks; verify says which hop)"
expect_exit 1 "$R" verify specs/prod.yaml

if [ -x examples/demo-service.sh ]; then
  bash examples/demo-service.sh "$venv"
fi

step "reconciler destroy specs/prod.yaml --auto-approve"
"$R" destroy specs/prod.yaml --auto-approve

step "demo complete"
