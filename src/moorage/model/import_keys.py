"""How each key of a compose file and of an ECS task definition is treated on import.

The one source of truth: the importers (`compose.py`, `ecs.py`) look keys up here, the tables in
docs/formats.md are checked against it (tests/unit/model/test_import_keys.py), and that test
holds the key lists of the compose specification and of AWS's API reference, so a key added
there fails until it is given a treatment here.

    mapped    moorage does what the key asks (`why`: what it becomes)
    notice    moorage does it its own way, and says so (`why`: what it becomes)
    ignored   dropped with a warning: nothing the container computes, nor its safety, depends on it
    refused   an error: running without it would be wrong or less safe (`why`: what to do instead)

Compose extension fields (`x-*`) are allowed anywhere and ignored silently: the importers'
job, not a table entry. A key's values can still be refused by the importer (`network_mode:
none`, `networkMode: none`) where the key itself is mapped.

A leaf module: the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ANCHORS",
    "COMPOSE_DEPLOY",
    "COMPOSE_SERVICE",
    "COMPOSE_TOP",
    "DOCS_URL",
    "ECS_CONTAINER",
    "ECS_LINUX_PARAMETERS",
    "ECS_TASK",
    "TABLES",
    "Key",
    "Treatment",
    "docs_ref",
    "warning_text",
]

Treatment = Literal["mapped", "notice", "ignored", "refused"]


@dataclass(frozen=True)
class Key:
    """One key's treatment; `why` is what it becomes (mapped, notice) or the reason shown to
    the user (ignored, refused): one short sentence they can act on."""

    treatment: Treatment
    why: str


def _m(why: str) -> Key:
    return Key("mapped", why)


def _n(why: str) -> Key:
    return Key("notice", why)


def _i(why: str) -> Key:
    return Key("ignored", why)


def _r(why: str) -> Key:
    return Key("refused", why)


DOCS_URL = "docs/formats.md"

_BRIDGE = (
    "every service gets moorage's bridge network with a dynamic host port; peers find each "
    "other by DNS (`<service>.service.moorage`) or the catalog"
)
_MERGE = "merge the files first (`docker compose config > merged.yml`) and import the result"
_LOGS = "moorage keeps each task's logs itself (`moorage logs`); log drivers are not configured"
_DNS = "containers resolve through moorage's DNS (`*.service.moorage`) and the node's resolvers"
_DESCRIBE = "output of describe-task-definition"
_GPU = "GPUs are not scheduled by moorage: run this service on a machine outside the cluster"
_HOOKS = "lifecycle hooks are not run: move the commands into the entrypoint or the image"

COMPOSE_TOP: dict[str, Key] = {
    "configs": _m("configs: content stored with the revision, mounted read-only"),
    "include": _r(f"include pulls in other compose files: {_MERGE}"),
    "models": _r(
        "Docker Model Runner models have no moorage equivalent: run the model server "
        "as a service with an image"
    ),
    "name": _m("project name, used in built image names (`<registry>/<name>-<service>`)"),
    "networks": _n(_BRIDGE),
    "secrets": _n(
        "compose mounts secrets as files; moorage sets them as environment variables "
        "from moorage secrets of the same name"
    ),
    "services": _m("one moorage service per compose service"),
    "version": _i("obsolete in the compose specification: every file is read the same way"),
    "volumes": _m("named volumes become cluster volumes (docs/volumes.md)"),
}

COMPOSE_SERVICE: dict[str, Key] = {
    "annotations": _i("OCI annotations are not set on the container; use `labels` for metadata"),
    "attach": _i(
        "only selects the logs `docker compose up` streams; `moorage logs` reads any task's"
    ),
    "blkio_config": _i(
        "block-I/O weights and throttles are not applied: the container's disk I/O is not limited"
    ),
    "build": _m(
        "built with the Docker engine the CLI reaches, tagged "
        "`<registry>/<project>-<service>:<tag>`, pushed when the cluster has more than "
        "one node"
    ),
    "cap_add": _m("`cap_add`"),
    "cap_drop": _m("`cap_drop`"),
    "cgroup": _r(
        "cgroup namespace modes are not supported: remove the key (containers get a "
        "private cgroup namespace)"
    ),
    "cgroup_parent": _r(
        "a custom parent cgroup would escape the limits the agent sets: remove the key"
    ),
    "command": _m("`command` (a string runs as `[sh, -c, string]`)"),
    "configs": _m("configs mounted read-only at their target"),
    "container_name": _i(
        "container names are per task (`<service>-<n>`); peers find the "
        "service as `<service>.service.moorage`"
    ),
    "cpu_count": _i("Windows-only CPU count: express the limit as `cpus`"),
    "cpu_percent": _i("Windows-only CPU percentage: express the limit as `cpus`"),
    "cpu_period": _i("CFS period and quota are not set: express the limit as `cpus`"),
    "cpu_quota": _i("CFS period and quota are not set: express the limit as `cpus`"),
    "cpu_rt_period": _r(
        "real-time CPU budgets are not supported: a process asking for "
        "real-time scheduling would fail"
    ),
    "cpu_rt_runtime": _r(
        "real-time CPU budgets are not supported: a process asking for "
        "real-time scheduling would fail"
    ),
    "cpu_shares": _m("`cpu` (shares are CPU units, 1024 = one core)"),
    "cpus": _m("`cpu` (cores times 1024)"),
    "cpuset": _i("CPU pinning is not applied: tasks are placed by CPU units, not by core"),
    "credential_spec": _r(
        "Windows gMSA credential specs are not supported (moorage runs Linux containers)"
    ),
    "depends_on": _m("deploy order (`service_started`, `service_healthy`)"),
    "deploy": _m("count, resources and restart policy (see the deploy keys)"),
    "develop": _i(
        "watch mode (`docker compose watch`) is a local workflow, not used when deploying"
    ),
    "device_cgroup_rules": _r(
        "device cgroup rules grant device access moorage does not manage: remove them"
    ),
    "devices": _r("host devices are not passed through: moorage does not place tasks by device"),
    "dns": _i(_DNS),
    "dns_opt": _i(_DNS),
    "dns_search": _i(_DNS),
    "domainname": _i(
        "the container's domain name is not set; peers use `<service>.service.moorage`"
    ),
    "entrypoint": _m("`entrypoint` (a string runs as `[sh, -c, string]`)"),
    "env_file": _m("`env`, read relative to the compose file; `environment` wins"),
    "environment": _m("`env`"),
    "expose": _m("`ports` with a dynamic host port"),
    "extends": _r(f"extends merges another service's definition: {_MERGE}"),
    "external_links": _r(
        "links to containers outside the file have no moorage equivalent: run "
        "them as moorage services and use `<service>.service.moorage`"
    ),
    "extra_hosts": _m("`extra_hosts` (`host-gateway` allowed)"),
    "gpus": _r(_GPU),
    "group_add": _r(
        "supplementary groups are not added: the process would lack file "
        "permissions it expects; set `user: uid:gid` instead"
    ),
    "healthcheck": _m("`health` (`CMD`, `CMD-SHELL` or a string)"),
    "hostname": _i("the container's hostname is its task's; peers use `<service>.service.moorage`"),
    "image": _m("`image`"),
    "init": _m("`init`"),
    "ipc": _r("IPC namespace sharing (`host`, `service:…`, `shareable`) is not supported"),
    "isolation": _i("Windows isolation modes do not apply to Linux containers"),
    "label_file": _i("labels are not read from files: put them under `labels`"),
    "labels": _m("container `labels`"),
    "links": _n(
        "peers reach each other through DNS `<service>.service.moorage`; link aliases "
        "are not created"
    ),
    "logging": _i(_LOGS),
    "mac_address": _i("MAC addresses are assigned by the bridge network"),
    "mem_limit": _m("`memory` (MiB)"),
    "mem_reservation": _m("`memory_reservation` (MiB)"),
    "mem_swappiness": _i("swap tuning is not applied: containers use the node's default"),
    "memswap_limit": _i("swap limits are not applied: containers use the node's default"),
    "models": _r(
        "Docker Model Runner models have no moorage equivalent: run the model server "
        "as a service with an image"
    ),
    "network_mode": _m(
        "`network_mode`: `bridge` (default) or `host` (ports become static host "
        "ports); other modes are refused"
    ),
    "networks": _n(_BRIDGE),
    "oom_kill_disable": _i(
        "the OOM killer stays enabled; moorage restarts a task killed for memory"
    ),
    "oom_score_adj": _i("OOM priority is left at the node's default"),
    "pid": _r("PID namespace sharing (`host`, `service:…`) is not supported"),
    "pids_limit": _r("PID limits are not enforced by moorage: remove the key to run without one"),
    "platform": _i("images are pulled for the node's own platform"),
    "ports": _m("`ports` (published ports pin a static host port, others get a dynamic one)"),
    "post_start": _r(_HOOKS),
    "pre_stop": _r(_HOOKS),
    "privileged": _m("`privileged`: runs only on agents started with --allow-privileged"),
    "profiles": _i(
        "profiles are not applied: every service in the file is deployed (remove "
        "the ones you do not want)"
    ),
    "provider": _r(
        "services managed by a provider plugin cannot run on moorage: run the "
        "resource outside and pass its address in `environment`"
    ),
    "pull_policy": _i("the agent pulls an image it does not have; pull policies are not applied"),
    "pull_refresh_after": _i(
        "the agent pulls an image it does not have; refresh periods are not applied"
    ),
    "read_only": _m("`read_only` (a read-only root filesystem)"),
    "restart": _m('`restart` (`"no"` → no restarts; the others → the default policy)'),
    "runtime": _r(
        "alternative runtimes (gVisor, Kata, nvidia) are not selected: the container "
        "would run under runc"
    ),
    "scale": _m("`count`"),
    "secrets": _n(
        "compose mounts secrets as files; moorage sets them as environment variables "
        "(upper-cased names)"
    ),
    "security_opt": _r(
        "seccomp, AppArmor, SELinux and no-new-privileges options are not "
        "applied: remove them to run with Docker's defaults"
    ),
    "shm_size": _m("`shm_size`"),
    "stdin_open": _i("tasks run without stdin; use `moorage exec` for an interactive shell"),
    "stop_grace_period": _m("`stop_timeout`"),
    "stop_signal": _m("`stop_signal`"),
    "storage_opt": _i("storage-driver options (root filesystem size) are not applied"),
    "sysctls": _m(
        "`sysctls` (namespaced ones: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)"
    ),
    "tmpfs": _m("`tmpfs`"),
    "tty": _i("no TTY is allocated; output is logged the same"),
    "ulimits": _m("`ulimits`"),
    "use_api_socket": _r(
        "mount `/var/run/docker.sock` as a volume instead: it runs only on "
        "agents started with --allow-docker-socket"
    ),
    "user": _m("`user`, as Docker's --user"),
    "userns_mode": _r(
        "user namespace modes are not supported: the container would run in "
        "the daemon's default user namespace"
    ),
    "uts": _r("sharing the node's UTS namespace (`uts: host`) is not supported"),
    "volumes": _m(
        "named volumes → cluster volumes; files under the compose directory → "
        "configs; absolute host paths → host volumes; `tmpfs` → `tmpfs`"
    ),
    "volumes_from": _r("declare the named volume and mount it in each service that needs it"),
    "working_dir": _m("`workdir`"),
}

COMPOSE_DEPLOY: dict[str, Key] = {
    "endpoint_mode": _i(
        "peers reach each task through DNS `<service>.service.moorage`; there is no virtual IP"
    ),
    "labels": _i("Swarm service labels are metadata; container labels go under `labels`"),
    "mode": _i(
        "moorage runs `replicas` tasks, as `replicated` does; `global` (one task per node) "
        "is not supported: set `replicas` instead"
    ),
    "placement": _i(
        "Swarm placement constraints name Swarm node attributes: set moorage "
        "`placement.constraints` in a moorage spec"
    ),
    "replicas": _m("`count`"),
    "resources": _m("`cpu`, `memory`, `memory_reservation` from limits and reservations"),
    "restart_policy": _m("`restart` (condition, max_attempts, delay, window)"),
    "rollback_config": _i(
        "rollbacks follow the service's deployment policy (`deployment` in a moorage spec)"
    ),
    "update_config": _i(
        "updates follow the service's deployment policy (`deployment` in a moorage spec)"
    ),
}

ECS_TASK: dict[str, Key] = {
    "compatibilities": _i(_DESCRIBE),
    "containerDefinitions": _m("`containers`, one per container definition"),
    "cpu": _m("task CPU units, shared among the containers without their own `cpu`"),
    "deleteRequestedAt": _i(_DESCRIBE),
    "deregisteredAt": _i(_DESCRIBE),
    "enableFaultInjection": _i("AWS Fault Injection Service endpoints do not exist on moorage"),
    "ephemeralStorage": _i(
        "Fargate ephemeral storage size: containers write to the node's Docker storage"
    ),
    "executionRoleArn": _i(
        "IAM roles exist only on AWS: nodes pull with their own registry "
        "credentials, secrets come from moorage's store"
    ),
    "family": _m("`service` (a DNS label), unless --service names it"),
    "inferenceAccelerators": _r("Elastic Inference accelerators exist only on AWS"),
    "ipcMode": _r("IPC namespace sharing (`host`, `task`) is not supported"),
    "memory": _m("task memory (MiB), shared among the containers without their own limit"),
    "networkMode": _m(
        "`bridge`; `awsvpc` → bridge with dynamic host ports (a notice); `host` "
        "→ the node's network with static ports; `none` is refused"
    ),
    "pidMode": _r("PID namespace sharing (`host`, `task`) is not supported"),
    "placementConstraints": _i(
        "ECS placement expressions are not translated: set moorage "
        "`placement.constraints` in a moorage spec"
    ),
    "proxyConfiguration": _r(
        "App Mesh proxy configuration is not applied: traffic would bypass the proxy"
    ),
    "registeredAt": _i(_DESCRIBE),
    "registeredBy": _i(_DESCRIBE),
    "requiresAttributes": _i(_DESCRIBE),
    "requiresCompatibilities": _i(
        "AWS launch types (EC2, FARGATE, EXTERNAL): moorage runs every task on its own nodes"
    ),
    "revision": _i(_DESCRIBE),
    "runtimePlatform": _i("images are pulled for the node's own platform"),
    "status": _i(_DESCRIBE),
    "tags": _i("AWS resource tags: use dockerLabels for container labels"),
    "taskDefinitionArn": _i(_DESCRIBE),
    "taskRoleArn": _i(
        "IAM roles exist only on AWS: give the containers credentials as moorage secrets"
    ),
    "volumes": _m(
        "`volumes`: host.sourcePath → host volumes, dockerVolumeConfiguration → "
        "local or shared volumes, EFS → shared volumes (a notice)"
    ),
}

ECS_CONTAINER: dict[str, Key] = {
    "command": _m("`command`"),
    "cpu": _m("`cpu` (same units, 1024 = one core)"),
    "credentialSpecs": _r("Active Directory credential specs (gMSA) are not supported"),
    "dependsOn": _m("`depends_on` (START → started, HEALTHY → healthy)"),
    "disableNetworking": _r(
        "containers without a network are not supported: the container would be reachable"
    ),
    "dnsSearchDomains": _i(_DNS),
    "dnsServers": _i(_DNS),
    "dockerLabels": _m("`labels`"),
    "dockerSecurityOptions": _r(
        "SELinux, AppArmor and seccomp options are not applied: remove "
        "them to run with Docker's defaults"
    ),
    "entryPoint": _m("`entrypoint`"),
    "environment": _m("`env`"),
    "environmentFiles": _r(
        "environment files on S3 are not fetched: put the variables in "
        "`environment` or in moorage secrets"
    ),
    "essential": _m("`essential`"),
    "extraHosts": _m("`extra_hosts`"),
    "firelensConfiguration": _i(
        "FireLens routing is ECS's: moorage keeps logs itself, so the router receives none"
    ),
    "healthCheck": _m("`health`"),
    "hostname": _i("the container's hostname is its task's; peers use `<service>.service.moorage`"),
    "image": _m("`image`"),
    "interactive": _i("tasks run without stdin; use `moorage exec` for an interactive shell"),
    "links": _n("containers of a task reach each other through DNS; link aliases are not created"),
    "linuxParameters": _m("runtime options (see the linuxParameters keys)"),
    "logConfiguration": _i(_LOGS),
    "memory": _m("`memory` (MiB, the hard limit)"),
    "memoryReservation": _m("`memory_reservation` (MiB; the limit too when `memory` is absent)"),
    "mountPoints": _m("`mounts`"),
    "name": _m("the container's `name` (a DNS label)"),
    "portMappings": _m("`ports` (hostPort 0 or absent → a dynamic host port)"),
    "privileged": _m("`privileged`: runs only on agents started with --allow-privileged"),
    "pseudoTerminal": _i("no TTY is allocated; output is logged the same"),
    "readonlyRootFilesystem": _m("`read_only`"),
    "repositoryCredentials": _i(
        "nodes pull with their own registry credentials (`docker login` on the node)"
    ),
    "resourceRequirements": _r(_GPU),
    "restartPolicy": _i(
        "failed containers are restarted by the service's restart policy, which replaces the task"
    ),
    "secrets": _m("`secrets` (the last part of valueFrom names the moorage secret)"),
    "startTimeout": _i("dependencies are awaited by the deployment's progress deadline"),
    "stopTimeout": _m("`stop_timeout` (seconds)"),
    "systemControls": _m("`sysctls`"),
    "ulimits": _m("`ulimits`"),
    "user": _m("`user`, as Docker's --user"),
    "versionConsistency": _i("tags are not pinned to digests: write `image@sha256:…` to pin one"),
    "volumesFrom": _r(
        "declare the volume and mount it (mountPoints) in each container that needs it"
    ),
    "workingDirectory": _m("`workdir`"),
}

ECS_LINUX_PARAMETERS: dict[str, Key] = {
    "capabilities": _m("`cap_add`, `cap_drop`"),
    "devices": _r("host devices are not passed through: moorage does not place tasks by device"),
    "initProcessEnabled": _m("`init`"),
    "maxSwap": _i("swap limits are not applied: containers use the node's default"),
    "sharedMemorySize": _m("`shm_size` (MiB)"),
    "swappiness": _i("swap tuning is not applied: containers use the node's default"),
    "tmpfs": _m("`tmpfs`"),
}

TABLES: dict[str, dict[str, Key]] = {
    "compose-top": COMPOSE_TOP,
    "compose-service": COMPOSE_SERVICE,
    "compose-deploy": COMPOSE_DEPLOY,
    "ecs-task": ECS_TASK,
    "ecs-container": ECS_CONTAINER,
    "ecs-linux-parameters": ECS_LINUX_PARAMETERS,
}
"""Each table by its name (the `table` argument of docs_ref and warning_text)."""

ANCHORS: dict[str, str] = {
    "compose-top": "compose-top-level-keys",
    "compose-service": "compose-service-keys",
    "compose-deploy": "compose-deploy-keys",
    "ecs-task": "ecs-task-definition-keys",
    "ecs-container": "ecs-container-definition-keys",
    "ecs-linux-parameters": "ecs-linuxparameters-keys",
}
"""The anchor of each table's heading in docs/formats.md (GitHub's slug of the heading)."""


def docs_ref(table: str, key: str) -> str:
    """Where the table holding `key` is documented: `docs/formats.md#compose-service-keys`.
    Raises KeyError for a table that is not one of TABLES."""
    del key  # every key of a table is a row under the same heading
    return f"{DOCS_URL}#{ANCHORS[table]}"


def warning_text(table: str, key: str) -> str:
    """The message of an ignored (or refused) key: its reason and where it is documented.
    Raises KeyError when the table has no such key."""
    return f"{TABLES[table][key].why} (see {docs_ref(table, key)})"
