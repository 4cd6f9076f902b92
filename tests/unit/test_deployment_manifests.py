"""The Kubernetes manifests (infra/k8s) and compose's RabbitMQ cluster profile, checked
offline: no cluster and no Docker engine are needed, and none of it has been applied.

Built-in kinds are validated strictly (unknown fields fail) against the Kubernetes OpenAPI
schemas that the ``kubernetes-validate`` package ships, for the oldest and the newest
Kubernetes it knows. The custom resources (KEDA's ScaledObject and TriggerAuthentication,
the RabbitMQ Cluster Operator's RabbitmqCluster) are checked field by field. The rest ties
the manifests to the code, so that renaming a route, a setting, a label or a queue, or
changing a time limit, fails here instead of in a cluster.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dramatiq import Message
from dramatiq.common import q_name
from flask import Flask
from werkzeug.exceptions import NotFound

from app.config import Settings, load_settings
from app.cron import tick_key
from app.defaults import STANDARD_QUEUES
from app.middleware import tracking
from app.observability import job_error_reports
from app.recording.claims import PREFETCH_PER_THREAD

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
COMPOSE = ROOT / "infra" / "compose.yaml"
CLUSTER_CONF = ROOT / "infra" / "rabbitmq" / "cluster.conf"
NODE_CONF = ROOT / "infra" / "rabbitmq" / "rabbitmq.conf"
DOCKERFILE = ROOT / "infra" / "Dockerfile"
README = ROOT / "infra" / "README.md"

# The package has no type information: its functions are reached through the module.
kubernetes_validate: Any = importlib.import_module("kubernetes_validate")
SHIPPED_VERSIONS = sorted(
    set(importlib.import_module("kubernetes_validate.utils").all_versions()),
    key=lambda version: tuple(int(part) for part in version.split(".")),
)
#: The oldest and the newest Kubernetes whose schemas the package ships.
KUBERNETES_VERSIONS = (SHIPPED_VERSIONS[0], SHIPPED_VERSIONS[-1])

#: Kinds defined by operators' CRDs, which kubernetes-validate has no schema for.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
}
#: make bench's ceiling for a worker process's peak resident memory (measured: ~75 MiB).
WORKER_PROCESS_MIB = 80


# Loading ------------------------------------------------------------------------------


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


DOCUMENTS = _documents()
RESOURCES = [(name, doc) for name, doc in DOCUMENTS if doc["kind"] != "Kustomization"]
BUILT_IN = [
    (name, doc) for name, doc in RESOURCES if (doc["apiVersion"], doc["kind"]) not in CUSTOM_KINDS
]


def _ids(items: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [f"{name}:{doc['kind']}/{doc['metadata']['name']}" for name, doc in items]


def one(kind: str, name: str) -> dict[str, Any]:
    matches = [
        doc for _, doc in RESOURCES if doc["kind"] == kind and doc["metadata"]["name"] == name
    ]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} documents"
    return matches[0]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in RESOURCES if doc["kind"] == kind]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def option(command: list[str], flag: str) -> str:
    assert command.count(flag) == 1, f"{flag} in {command}"
    return command[command.index(flag) + 1]


def config_data() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap", "jobstack-config")["data"]
    return data


def configured() -> Settings:
    return load_settings(config_data())


def secret_data(name: str) -> dict[str, str]:
    data: dict[str, str] = one("Secret", name)["stringData"]
    return data


API = one("Deployment", "jobstack-api")
WORKER = one("Deployment", "jobstack-worker")
SCHEDULER = one("Deployment", "jobstack-scheduler")
RABBITMQ = one("RabbitmqCluster", "jobstack-rabbitmq")
SCALED = one("ScaledObject", "jobstack-worker")


# Schemas ------------------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_and_nothing_else() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    # The image the Deployments name is the one the kustomization points at a registry.
    images = {image["name"] for image in kustomization["images"]}
    used = {
        c["image"]
        for _, doc in RESOURCES
        if doc["kind"] in {"Deployment", "Job"}
        for c in doc["spec"]["template"]["spec"]["containers"]
    }
    assert used == images == {"jobstack"}


@pytest.mark.parametrize(("file", "document"), BUILT_IN, ids=_ids(BUILT_IN))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_built_in_kinds_match_the_kubernetes_schemas(
    file: str, document: dict[str, Any], version: str
) -> None:
    kubernetes_validate.validate(document, version, strict=True)


def test_every_document_is_validated_or_checked_below() -> None:
    # Every custom kind present has its checks below; any other kind is validated above,
    # where one the package has no schema for fails instead of passing unchecked.
    kinds = {(doc["apiVersion"], doc["kind"]) for _, doc in RESOURCES}
    assert kinds & CUSTOM_KINDS == CUSTOM_KINDS
    assert all(
        doc["apiVersion"] != "keda.sh/v1alpha1"
        or doc["kind"] in {"ScaledObject", "TriggerAuthentication"}
        for _, doc in RESOURCES
    )


def test_the_strict_validation_rejects_a_misspelled_field() -> None:
    broken = copy.deepcopy(WORKER)
    spec = broken["spec"]["template"]["spec"]
    spec["terminationGracePeriod"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


# Settings -----------------------------------------------------------------------------


def test_every_variable_given_to_jobstack_is_a_setting() -> None:
    known = {f"JOBSTACK_{field.name.upper()}" for field in fields(Settings)}
    given = set(config_data()) | set(secret_data("jobstack-secrets"))
    assert given <= known, given - known
    for _, doc in RESOURCES:
        if doc["kind"] in {"Deployment", "Job"}:
            for c in doc["spec"]["template"]["spec"]["containers"]:
                assert {env["name"] for env in c.get("env", [])} <= known


def test_the_settings_parse_and_ask_for_quorum_queues() -> None:
    settings = load_settings({**config_data(), **secret_data("jobstack-secrets")})
    assert settings.queue_type == "quorum"
    assert settings.metrics_enabled
    assert settings.metrics_host == "0.0.0.0"


def test_every_process_gets_the_config_and_the_secrets() -> None:
    for doc in (API, WORKER, SCHEDULER, one("Job", "jobstack-migrate")):
        sources = container(doc)["envFrom"]
        assert {"configMapRef": {"name": "jobstack-config"}} in sources
        assert {"secretRef": {"name": "jobstack-secrets"}} in sources


def test_the_broker_urls_name_every_node_of_the_rabbitmq_cluster() -> None:
    cluster = RABBITMQ["metadata"]["name"]
    urls = secret_data("jobstack-secrets")["JOBSTACK_BROKER_URL"].split(";")
    hosts = [urlsplit(url).hostname for url in urls]
    # The operator's StatefulSet <cluster>-server and headless Service <cluster>-nodes.
    nodes = [f"{cluster}-server-{n}.{cluster}-nodes" for n in range(RABBITMQ["spec"]["replicas"])]
    assert sorted(hosts, key=str) == nodes
    assert {urlsplit(url).scheme for url in urls} == {"amqp"}
    assert {urlsplit(url).port for url in urls} == {5672}


def test_the_secrets_hold_example_values_only() -> None:
    for name in ("jobstack-secrets", "jobstack-keda-rabbitmq"):
        for key, value in secret_data(name).items():
            assert "CHANGE-ME" in value, f"{name}/{key} looks like a real credential"


# The API ------------------------------------------------------------------------------


@pytest.fixture
def flask_app(database_url: str) -> Flask:
    from api import create_app

    return create_app({"TESTING": True})


def test_the_api_probes_hit_routes_the_api_serves(flask_app: Flask) -> None:
    c = container(API)
    liveness = c["livenessProbe"]["httpGet"]["path"]
    readiness = c["readinessProbe"]["httpGet"]["path"]
    startup = c["startupProbe"]["httpGet"]["path"]
    adapter = flask_app.url_map.bind("localhost")
    for path in (liveness, readiness, startup):
        try:
            adapter.match(path, method="GET")
        except NotFound:
            pytest.fail(f"the API serves no {path}")
    # Liveness must not depend on the database or RabbitMQ: an outage of either would
    # otherwise restart every API pod.
    assert liveness == startup == "/healthz" != readiness == "/readyz"
    assert flask_app.test_client().get(liveness).status_code == 200


def test_the_api_listens_where_its_probes_and_service_point() -> None:
    c = container(API)
    bind = option(c["command"], "--bind")
    port = int(bind.rsplit(":", 1)[1])
    assert bind.startswith("0.0.0.0:")
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert named[c[probe]["httpGet"]["port"]] == port
    service = one("Service", "jobstack-api")
    (service_port,) = service["spec"]["ports"]
    assert named[service_port["targetPort"]] == port
    # The periodic health check reaches the API through the Service.
    api_url = urlsplit(configured().api_url)
    assert (api_url.hostname, api_url.port) == ("jobstack-api", service_port["port"])


def test_the_api_grace_period_covers_gunicorns_graceful_stop() -> None:
    # gunicorn has no type information either.
    graceful: int = importlib.import_module("gunicorn.config").Config().graceful_timeout
    c = container(API)
    pause = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert API["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= pause + graceful


# Labels -------------------------------------------------------------------------------


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_each_deployment_selects_its_own_pods_only() -> None:
    deployments = of_kind("Deployment")
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        chosen = [d["metadata"]["name"] for d in deployments if selects(selector, pod_labels(d))]
        assert chosen == [deployment["metadata"]["name"]]


def test_the_service_selects_the_api_pods_only() -> None:
    selector = one("Service", "jobstack-api")["spec"]["selector"]
    chosen = [
        d["metadata"]["name"] for d in of_kind("Deployment") if selects(selector, pod_labels(d))
    ]
    assert chosen == ["jobstack-api"]


@pytest.mark.parametrize("name", ["jobstack-api", "jobstack-worker", "jobstack-scheduler"])
def test_each_pod_disruption_budget_covers_one_deployment(name: str) -> None:
    selector = one("PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"]
    chosen = [
        d["metadata"]["name"] for d in of_kind("Deployment") if selects(selector, pod_labels(d))
    ]
    assert chosen == [name]


def test_the_rabbitmq_budget_and_spread_select_the_operators_pods() -> None:
    # The operator labels the cluster's pods app.kubernetes.io/name=<cluster name>.
    operator_labels = {"app.kubernetes.io/name": RABBITMQ["metadata"]["name"]}
    budget = one("PodDisruptionBudget", "jobstack-rabbitmq")["spec"]
    assert budget["selector"]["matchLabels"] == operator_labels
    assert budget["maxUnavailable"] == 1
    (term,) = RABBITMQ["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["labelSelector"]["matchLabels"] == operator_labels
    assert term["topologyKey"] == "kubernetes.io/hostname"


# Workers ------------------------------------------------------------------------------


def test_the_worker_shutdown_lets_the_longest_attempt_finish() -> None:
    command = container(WORKER)["command"]
    # Dramatiq's main process must be the container's: Kubernetes signals that process
    # only, and a shell in between would not pass SIGTERM on.
    assert command[:2] == ["dramatiq", "actors"]
    shutdown_seconds = int(option(command, "--worker-shutdown-timeout")) / 1000
    assert shutdown_seconds >= configured().max_time_limit
    # Before the running jobs: claimed jobs are handed to threads; after them: outcomes
    # still being committed, then error reports being sent.
    stop = (
        tracking.SHUTDOWN_FLUSH_SECONDS
        + shutdown_seconds
        + tracking.SHUTDOWN_FLUSH_SECONDS
        + job_error_reports.SHUTDOWN_FLUSH_SECONDS
    )
    assert WORKER["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= stop


def test_rabbitmq_lets_a_worker_hold_a_message_for_the_longest_attempt() -> None:
    for text in (RABBITMQ["spec"]["rabbitmq"]["additionalConfig"], NODE_CONF.read_text()):
        (timeout_ms,) = re.findall(r"^consumer_timeout\s*=\s*(\d+)\s*$", text, re.M)
        assert int(timeout_ms) > configured().max_time_limit * 1000


def test_the_worker_metrics_and_files_go_where_the_settings_say() -> None:
    settings = configured()
    c = container(WORKER)
    assert {p["containerPort"] for p in c["ports"] if p["name"] == "metrics"} == {
        settings.metrics_port
    }
    volumes = {v["name"]: v for v in WORKER["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    assert "emptyDir" in mounts[settings.metrics_dir]
    assert mounts[settings.storage_dir]["persistentVolumeClaim"]["claimName"] == "jobstack-storage"


def test_the_api_and_the_workers_share_the_upload_volume() -> None:
    storage_dir = configured().storage_dir
    claim = one("PersistentVolumeClaim", "jobstack-storage")
    # API and worker pods run on different hosts.
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for deployment in (API, WORKER):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        (mount,) = [
            m for m in container(deployment)["volumeMounts"] if m["mountPath"] == storage_dir
        ]
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "jobstack-storage"


def quantity(text: str | int) -> float:
    """A Kubernetes quantity as a number (bytes, cores)."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(text))
    assert match and match.group(2) in units, f"not a quantity: {text!r}"
    return float(match.group(1)) * units[match.group(2)]


def test_every_container_has_requests_within_its_limits() -> None:
    for _, doc in RESOURCES:
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            resources = c["resources"]
            for what in ("cpu", "memory"):
                request = quantity(resources["requests"][what])
                assert 0 < request <= quantity(resources["limits"][what])


def test_the_worker_memory_fits_its_processes() -> None:
    processes = int(option(container(WORKER)["command"], "--processes"))
    resources = container(WORKER)["resources"]
    assert quantity(resources["requests"]["memory"]) >= processes * WORKER_PROCESS_MIB * 2**20
    # One core per process at most: each is bound by its own interpreter lock.
    assert quantity(resources["limits"]["cpu"]) == processes


def test_pods_run_as_a_numeric_non_root_user() -> None:
    (user,) = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(), re.M)
    for _, doc in RESOURCES:
        if doc["kind"] in {"Deployment", "Job"}:
            context = doc["spec"]["template"]["spec"]["securityContext"]
            assert context["runAsNonRoot"] is True
            # The kubelet refuses runAsNonRoot for an image whose USER is a name
            # unless the pod gives the number.
            assert user.isdigit() or context["runAsUser"] > 0


# Scheduler ----------------------------------------------------------------------------


def _tick(actor: str, at: datetime) -> Message[Any]:
    return Message(
        queue_name="low",
        actor_name=actor,
        args=(),
        kwargs={},
        options={"scheduled_at": at.isoformat()},
    )


def test_overlapping_schedulers_make_one_job_per_tick() -> None:
    # Two replicas and a rolling update let schedulers overlap; that is safe only while
    # their messages for one tick share the idempotency key.
    spec = SCHEDULER["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    first = _tick("maintenance.prune_jobs", datetime(2026, 12, 2, 3, 17, 0, tzinfo=UTC))
    second = _tick("maintenance.prune_jobs", datetime(2026, 12, 2, 3, 17, 2, tzinfo=UTC))
    assert tick_key(first) is not None
    assert tick_key(first) == tick_key(second)


def test_the_scheduler_gets_sigterm_through_single_signal() -> None:
    command = container(SCHEDULER)["command"]
    # periodiq installs no SIGTERM handler, which PID 1 needs to stop on one.
    assert command[:4] == ["python", "-m", "app.cli.single_signal", "--"]
    assert importlib.util.find_spec("app.cli.single_signal") is not None
    assert command[4:] == ["periodiq", "actors"]


# KEDA ---------------------------------------------------------------------------------


def worker_queues() -> set[str]:
    """Every queue a worker consumes: the standard ones, the configured ones and the
    actors' own."""
    import actors  # noqa: F401  (declares the actors' queues)
    from app.broker import broker, configured_queues

    # jobstack's own actors only: other tests declare actors and queues of their own on
    # the same broker.
    own = {
        actor.queue_name
        for actor in broker.actors.values()
        if actor.fn.__module__.split(".")[0] == "actors"
    }
    return set(STANDARD_QUEUES) | set(configured_queues(configured())) | own


def rabbitmq_triggers() -> Iterator[dict[str, Any]]:
    for trigger in SCALED["spec"]["triggers"]:
        assert trigger["type"] == "rabbitmq"
        yield trigger


def test_the_scaled_object_scales_the_worker_deployment() -> None:
    assert SCALED["apiVersion"] == "keda.sh/v1alpha1"
    target = SCALED["spec"]["scaleTargetRef"]
    assert target["name"] == WORKER["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    # The outbox relay runs in worker processes: with none, scheduled jobs never reach a
    # queue and nothing would scale the workers up again.
    assert SCALED["spec"]["minReplicaCount"] >= 1
    assert SCALED["spec"]["maxReplicaCount"] > SCALED["spec"]["minReplicaCount"]
    # KEDA's autoscaler owns the count; a replicas field would reset it on each apply.
    assert "replicas" not in WORKER["spec"]


def test_the_triggers_cover_every_queue_the_workers_consume() -> None:
    queues = [trigger["metadata"]["queueName"] for trigger in rabbitmq_triggers()]
    assert sorted(queues) == sorted(worker_queues())
    # Delayed messages (.DQ) and dead letters (.XQ) are not work to do now.
    assert all(q_name(queue) == queue for queue in queues)


def test_the_trigger_target_is_what_one_worker_pod_holds() -> None:
    command = container(WORKER)["command"]
    held = int(option(command, "--processes")) * int(option(command, "--threads"))
    for trigger in rabbitmq_triggers():
        metadata = trigger["metadata"]
        assert metadata["mode"] == "QueueLength"
        # Ready and unacknowledged messages: what workers prefetched counts as demand.
        assert metadata["protocol"] == "http"
        assert metadata.get("excludeUnacknowledged", "false") == "false"
        assert int(metadata["value"]) == held * PREFETCH_PER_THREAD


def test_the_triggers_authenticate_with_the_management_url_secret() -> None:
    authentication = one("TriggerAuthentication", "jobstack-rabbitmq")
    assert authentication["apiVersion"] == "keda.sh/v1alpha1"
    refs = {ref["parameter"]: ref for ref in authentication["spec"]["secretTargetRef"]}
    host = secret_data(refs["host"]["name"])[refs["host"]["key"]]
    url = urlsplit(host)
    # The operator's client Service, which serves the management API on 15672.
    assert (url.scheme, url.hostname, url.port) == ("http", RABBITMQ["metadata"]["name"], 15672)
    for trigger in rabbitmq_triggers():
        assert trigger["authenticationRef"]["name"] == "jobstack-rabbitmq"


# RabbitMQ -----------------------------------------------------------------------------


def test_the_rabbitmq_cluster_has_three_nodes_for_quorum_queues() -> None:
    assert RABBITMQ["apiVersion"] == "rabbitmq.com/v1beta1"
    spec = RABBITMQ["spec"]
    assert spec["replicas"] == 3
    config = spec["rabbitmq"]["additionalConfig"]
    assert re.search(r"^cluster_partition_handling\s*=\s*pause_minority$", config, re.M)
    assert re.search(
        r"^quorum_queue\.continuous_membership_reconciliation\.target_group_size\s*=\s*3$",
        config,
        re.M,
    )
    # jobstack names its queues' type; a server default would turn its classic queues,
    # declared with priorities, into quorum queues that refuse them.
    assert not re.search(r"^default_queue_type", config, re.M)
    # Requests equal to limits for memory: the operator sizes the memory alarm on it.
    resources = spec["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]


# Compose ------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def interpolated(value: str, env: dict[str, str]) -> str:
    """compose's ${NAME:-default} interpolation, the only form compose.yaml uses."""

    def replace(match: re.Match[str]) -> str:
        return env.get(match.group(1)) or match.group(2)

    return re.sub(r"\$\{(\w+):-([^}]*)\}", replace, value)


def cluster_nodes() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return {
        name: service
        for name, service in services.items()
        if "cluster" in service.get("profiles", [])
    }


def test_the_default_compose_stack_is_unchanged() -> None:
    services = compose()["services"]
    default = {name for name, service in services.items() if not service.get("profiles")}
    assert default == {"rabbitmq", "postgres", "migrate", "api", "worker"}
    for name in default:
        depends = services[name].get("depends_on", [])
        assert set(depends) <= default, name
    env = compose()["x-jobstack-env"]
    assert interpolated(env["JOBSTACK_BROKER_URL"], {}) == "amqp://guest:guest@rabbitmq:5672/%2F"
    assert load_settings({k: interpolated(v, {}) for k, v in env.items()}).queue_type == "classic"


def test_the_cluster_profile_runs_three_clustered_nodes() -> None:
    nodes = cluster_nodes()
    assert len(nodes) == 3
    single = compose()["services"]["rabbitmq"]
    assert {node["image"] for node in nodes.values()} == {single["image"]}
    assert len({node["environment"]["RABBITMQ_ERLANG_COOKIE"] for node in nodes.values()}) == 1
    for name, node in nodes.items():
        # The node's name is rabbit@<hostname>; other containers reach it by service name.
        assert node["hostname"] == name
        mounts = {volume.split(":")[0] for volume in node["volumes"]}
        assert mounts == {"./rabbitmq/rabbitmq.conf", "./rabbitmq/cluster.conf"}
    conf = CLUSTER_CONF.read_text()
    assert re.search(
        r"^cluster_formation\.peer_discovery_backend\s*=\s*classic_config$", conf, re.M
    )
    listed = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+\s*=\s*(\S+)$", conf, re.M)
    assert sorted(listed) == sorted(f"rabbit@{name}" for name in nodes)


def test_the_documented_cluster_command_points_jobstack_at_the_nodes() -> None:
    env = compose()["x-jobstack-env"]
    for text in (README.read_text(), COMPOSE.read_text()):
        (urls,) = re.findall(r"\bSTACK_BROKER_URL='([^']+)'", text)
        assert re.search(r"\bSTACK_QUEUE_TYPE=quorum\b", text)
        assert "--profile cluster" in text
        given = {"STACK_BROKER_URL": urls, "STACK_QUEUE_TYPE": "quorum"}
        settings = load_settings({k: interpolated(v, given) for k, v in env.items()})
        assert settings.queue_type == "quorum"
        hosts = sorted(str(urlsplit(url).hostname) for url in settings.broker_url.split(";"))
        assert hosts == sorted(cluster_nodes())
