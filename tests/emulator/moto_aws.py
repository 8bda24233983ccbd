"""Where moto 5.2.5 differs from AWS in a way the reconciler's waits depend on, made to behave
as AWS documents (imported by the launchers in this directory; test and demo only).

- A deleted NAT gateway releases its network interface and its Elastic IP association. moto
  only marks the gateway `deleted` and keeps both for ever, so a subnet would look busy (a
  network interface still in it) and the address still associated long after AWS frees them.
- ListTasks with `serviceName` lists only that service's tasks; a stopped task's network
  interface is released; RunTask takes a Fargate task whose containers set no memory (below).
- UpdateService with a new task definition starts a new PRIMARY deployment of it (below).
- An SQS queue's URL is AWS's (`https://sqs.<region>.amazonaws.com/<account>/<name>`), not
  built from the host and port the request came to: it is what the stack records (the task
  definition's environment), and one emulator's state is served on other ports (the fork
  server's templates). Calls still reach moto through the endpoint; moto finds the queue by
  the URL's last part.
"""
from moto.ec2.models.nat_gateways import NatGatewayBackend

_delete_nat_gateway = NatGatewayBackend.delete_nat_gateway


def _delete_nat_gateway_releasing(self, nat_gateway_id):
    nat = _delete_nat_gateway(self, nat_gateway_id)
    eni = getattr(nat, "_eni", None)
    if eni is not None and eni.id in self.enis:
        for address in self.addresses:
            if address.eni is eni:
                self.disassociate_address(association_id=address.association_id)
        self.delete_network_interface(eni.id)
    return nat


NatGatewayBackend.delete_nat_gateway = _delete_nat_gateway_releasing


# - ListTasks with `serviceName` lists the tasks that service started (their group is
#   `service:<name>`); moto ignores the filter and lists every task of the cluster.
# - A stopped Fargate task's network interface is released; moto keeps it for ever.
from moto.ec2.models import ec2_backends
from moto.ecs.models import EC2ContainerServiceBackend

_list_tasks = EC2ContainerServiceBackend.list_tasks
_stop_task = EC2ContainerServiceBackend.stop_task


def _list_tasks_of_service(self, cluster_str=None, container_instance=None, family=None, started_by=None, service_name=None, desiredStatus=None):
    tasks = _list_tasks(self, cluster_str, container_instance, family, started_by, service_name, desiredStatus)
    if service_name:
        tasks = [t for t in tasks if t.group == f"service:{service_name.split('/')[-1]}"]
    return tasks


def _stop_task_releasing(self, cluster_str, task_str, reason):
    task = _stop_task(self, cluster_str, task_str, reason)
    ec2 = ec2_backends[self.account_id][self.region_name]
    for attachment in task.attachments:
        for detail in attachment.get("details", []):
            if detail.get("name") == "networkInterfaceId" and detail.get("value") in ec2.enis:
                ec2.delete_network_interface(detail["value"])
    return task


EC2ContainerServiceBackend.list_tasks = _list_tasks_of_service
EC2ContainerServiceBackend.stop_task = _stop_task_releasing


# - UpdateService with a new task definition starts a new deployment of it: the new one is
#   PRIMARY (rolling out), the one before it ACTIVE until ECS retires it. moto only changes the
#   service's task definition and keeps the old revision in its one deployment.
_update_service = EC2ContainerServiceBackend.update_service


def _update_service_deploying(self, service_properties):
    before = self._get_service(service_properties.get("cluster", "default"), service_properties["service"].split("/")[-1]).task_definition
    service = _update_service(self, service_properties)
    primary = next((d for d in service.deployments if d.get("status") == "PRIMARY"), None)
    if primary is not None and service.task_definition != before:
        import copy
        from moto.core.utils import utcnow
        from moto.moto_api._internal import mock_random

        new = copy.deepcopy(primary)
        new.update(id=f"ecs-svc/{mock_random.randint(0, 32**12)}", taskDefinition=service.task_definition, createdAt=utcnow(), updatedAt=utcnow())
        new.update(rolloutState="IN_PROGRESS", rolloutStateReason=f"ECS deployment {new['id']} in progress.", runningCount=0)
        primary["status"] = "ACTIVE"
        service.deployments = [new, primary]
    return service


EC2ContainerServiceBackend.update_service = _update_service_deploying


# - RunTask of a Fargate task definition whose containers set no memory of their own (the task's
#   memory is enough on AWS) fails in moto adding None; count such a container as 0 MiB.
_requirements = EC2ContainerServiceBackend._calculate_task_resource_requirements


def _requirements_without_container_memory(task_definition):
    unset = [
        c for c in task_definition.container_definitions
        if c.get("memory") is None and c.get("memoryReservation") is None and "Memory" not in c and "MemoryReservation" not in c
    ]
    for c in unset:
        c["memoryReservation"] = 0
    try:
        return _requirements(task_definition)
    finally:
        for c in unset:
            del c["memoryReservation"]


EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(_requirements_without_container_memory)


# - moto's threaded server answers calls concurrently on unlocked dictionaries:
#   DescribeSecurityGroupRules while a rule is being added, or GetRole while CreateRole adds a
#   role, fails with "dictionary changed size during iteration" (an HTML 500 AWS never sends).
#   Calls are answered one at a time, except SQS's (ReceiveMessage long-polls; the service's
#   tests keep several pollers waiting at once).
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_one_at_a_time = threading.Lock()
_dispatch = DomainDispatcherApplication.__call__


def _dispatch_serialised(self, environ, start_response):
    if "/sqs/aws4_request" in environ.get("HTTP_AUTHORIZATION", ""):
        return _dispatch(self, environ, start_response)
    with _one_at_a_time:
        return list(_dispatch(self, environ, start_response))


DomainDispatcherApplication.__call__ = _dispatch_serialised


# Speed only, no answer changes: moto 5.2.5 redoes per request work whose result never changes
# in a process (measured with py-spy --gil over the compute and edge tests: about a fifth of
# moto's CPU, and moto is half of the suite's):
# - every request lists moto's package directory (`list_of_moto_modules`, ~150 stat calls);
# - every request inspects its response class for method names (`inspect.getmembers`);
# - every error answer builds a new botocore Session to name its service, and a new
#   ErrorLookupFactory whose per-instance cache is then thrown away.
import functools

from moto import backends
from moto.core import errors, responses, utils

_moto_modules = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _moto_modules
responses.method_names_from_class = functools.cache(responses.method_names_from_class)
utils.service_name_from_moto_package_name = functools.cache(utils.service_name_from_moto_package_name)
_error_lookups = {}


def _error_lookup_factory_shared(self):
    self._error_lut_cache = _error_lookups


errors.ErrorLookupFactory.__init__ = _error_lookup_factory_shared


def warm(service_names):
    """Fill the caches above (and moto's own model caches) for these services, so that a
    forked emulator starts with them (tests/emulator/moto-forkserver.py)."""
    for name in service_names:
        model = utils.get_service_model(name)
        errors.ErrorLookupFactory().for_service(model)
        try:
            utils.get_pagination_model(name)
        except Exception:  # a service without pagination model
            pass
    for package in backends.list_of_moto_modules():
        utils.service_name_from_moto_package_name(package)


from moto.sqs.models import Queue


def _aws_queue_url(self, request_url):
    return f"https://sqs.{self.region}.amazonaws.com/{self.account_id}/{self.name}"


Queue.url = _aws_queue_url
