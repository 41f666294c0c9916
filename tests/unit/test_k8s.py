"""The Kubernetes manifests (k8s/): valid for Kubernetes 1.30 and wired to the code they run, checked offline.

The kustomizations are rendered by ``kubectl kustomize`` (`tests.unit.k8s_support.render`), validated against
kubernetes-validate's bundled JSON schemas, and the init containers' scripts are run for real, their hostfile
read by ``bytewax.run``'s own argument handling.
"""

from __future__ import annotations

import ast
import copy
import importlib
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from bytewax import run as bytewax_run
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from broadcaster.settings import BroadcasterSettings
from connectors.collector.config import live_specs
from connectors.collector.settings import CollectorSettings
from schemas import CEX_TOPICS, CHAIN_TOPICS
from tests.unit.k8s_support import (
    K8S,
    REPO,
    SETTINGS_CLASSES,
    Resource,
    bytewax_env_names,
    config_env,
    containers,
    env_of,
    find,
    flow_of,
    kafka_settings,
    named,
    pod_spec,
    quantity,
    rendered,
    run_script,
    settings_env_names,
)

KUBERNETES_VERSION = "1.30"
RENDERINGS = ("base", "overlays/small", "overlays/production")
EVERYTHING = (*RENDERINGS, "examples")
NOT_DEPLOYED_FLOWS = {"replay"}  # a one-shot backfill: k8s/examples/replay-job.yaml
#: Variables only the init containers' scripts read (neither Bytewax nor a settings class does).
SCRIPT_ENV = {"BYTEWAX_REPLICAS", "BYTEWAX_SERVICE_NAME", "BYTEWAX_PROCESS_PORT", "MARKETPIPE_RECOVERY_PARTITIONS"}
SCRIPT_ENV |= {"POD_NAMESPACE", "CLUSTER_DOMAIN"}
#: The one input topic that bounds the parallelism of these flows.
INPUT_TOPIC = {"normalize_cex": "raw", "archive_raw": "raw", "normalize_evm": "ethereum_logs"}
LARGE_RECORD_TOPICS = ("raw", "lob", "dead_letter")
STATEFULSETS = sorted(s["metadata"]["name"] for s in find(rendered("base"), "StatefulSet"))


def check_resources(container: dict[str, Any]) -> None:
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind]), container["name"]


@pytest.mark.parametrize("name", EVERYTHING)
def test_every_resource_is_valid_kubernetes(name: str) -> None:
    resources = rendered(name)
    assert resources
    for resource in resources:
        if resource["kind"] == "KafkaTopic":
            continue  # a Strimzi custom resource: test_kafka_topics_match_the_pipeline
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{resource['kind']}/{resource['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_schema_validation_catches_a_misspelled_field() -> None:
    statefulset = copy.deepcopy(find(rendered("base"), "StatefulSet")[0])
    statefulset["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", RENDERINGS)
def test_kafka_topics_match_the_pipeline(name: str) -> None:
    resources = rendered(name)
    config = kafka_settings(resources)
    topics: dict[str, dict[str, Any]] = {}
    for topic in find(resources, "KafkaTopic"):
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "marketpipe"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", topic["metadata"]["name"])
        spec = topic["spec"]
        assert set(spec) <= {"topicName", "partitions", "replicas", "config"}
        assert type(spec["partitions"]) is int and type(spec["replicas"]) is int
        assert all(type(v) in (int, str) for v in spec["config"].values())
        assert int(spec["config"]["retention.ms"]) > 0
        assert int(spec["config"]["min.insync.replicas"]) <= spec["replicas"]
        topic_name = spec.get("topicName", topic["metadata"]["name"])
        assert (spec["partitions"], spec["replicas"]) == (config.partitions_for(topic_name), config.topic_replication)
        topics[topic_name] = spec
    assert set(topics) == {config.raw_topic, config.dead_letter_topic, *CEX_TOPICS, *CHAIN_TOPICS}
    for topic_name in LARGE_RECORD_TOPICS:
        assert int(topics[topic_name]["config"]["max.message.bytes"]) >= config.kafka_max_message_bytes
    assert {broker.rpartition(":")[0] for broker in config.brokers} == {"marketpipe-kafka-bootstrap"}


def test_every_long_running_flow_has_a_statefulset() -> None:
    flows = {path.stem for path in (REPO / "flows").glob("*.py")} - {"__init__"} - NOT_DEPLOYED_FLOWS
    deployed = [flow_of(s) for s in find(rendered("base"), "StatefulSet")]
    assert sorted(deployed) == sorted(flows)
    for flow in deployed:
        module = importlib.import_module(f"flows.{flow}")
        assert callable(module.__dict__.get("build")) and callable(module.__dict__.get("__getattr__"))
        assert "flow" not in module.__dict__  # built on access (bytewax.run's getattr), not at import
        tree = ast.parse(Path(str(module.__file__)).read_text())
        getattr_def = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__")
        assert any(isinstance(n, ast.Constant) and n.value == "flow" for n in ast.walk(getattr_def)), flow


@pytest.mark.parametrize("sts_name", STATEFULSETS)
@pytest.mark.parametrize("name", RENDERINGS)
def test_statefulset_wires_a_bytewax_cluster(name: str, sts_name: str) -> None:
    resources = rendered(name)
    [statefulset] = find(resources, "StatefulSet", sts_name)
    spec, pod = statefulset["spec"], pod_spec(statefulset)
    assert spec["podManagementPolicy"] == "Parallel"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    [service] = find(resources, "Service", spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= labels.items()
    service_ports = named(service["spec"]["ports"])

    main = named(pod["containers"])["dataflow"]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    env = env_of(main)
    assert env["BYTEWAX_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["BYTEWAX_STATEFULSET_NAME"] == sts_name
    assert Path(env["BYTEWAX_HOSTFILE_PATH"]).parent == Path(mounts["hostfile"])
    assert env["BYTEWAX_DATAFLOW_API_ENABLED"] == "true"
    assert int(env["BYTEWAX_DATAFLOW_API_PORT"]) == ports["api"] == 3030
    assert int(spec["template"]["metadata"]["annotations"]["prometheus.io/port"]) == ports["api"]
    assert env["BYTEWAX_DATAFLOW_API_CACHE_PATH"] == mounts["api-cache"]
    assert service_ports["process"]["targetPort"] in ("process", ports["process"])
    assert service_ports["api"]["targetPort"] in ("api", ports["api"])

    args = bytewax_run._create_arg_parser().parse_args(main["command"][3:])
    assert str(args.recovery_directory) == mounts["recovery"]
    assert args.snapshot_interval.total_seconds() > 0 and args.backup_interval is not None
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["recovery"]

    hostfile, recovery = pod["initContainers"]  # in this order: recovery-init reads the hostfile
    assert (hostfile["name"], recovery["name"]) == ("hostfile", "recovery-init")
    hostfile_env, recovery_env = env_of(hostfile), env_of(recovery)
    assert int(hostfile_env["BYTEWAX_REPLICAS"]) == spec["replicas"]
    assert (hostfile_env["BYTEWAX_STATEFULSET_NAME"], hostfile_env["BYTEWAX_SERVICE_NAME"]) == (
        sts_name,
        spec["serviceName"],
    )
    assert int(hostfile_env["BYTEWAX_PROCESS_PORT"]) == ports["process"] == service_ports["process"]["port"]
    hostfile_path = env["BYTEWAX_HOSTFILE_PATH"]
    assert hostfile_env["BYTEWAX_HOSTFILE_PATH"] == recovery_env["BYTEWAX_HOSTFILE_PATH"] == hostfile_path
    assert int(recovery_env["MARKETPIPE_RECOVERY_PARTITIONS"]) >= spec["replicas"]
    assert named(recovery["volumeMounts"])["recovery"]["mountPath"] == mounts["recovery"]
    assert f"python -m connectors.recovery {mounts['recovery']} " in recovery["args"][0]

    flow = flow_of(statefulset)
    if flow in INPUT_TOPIC:
        processes = spec["replicas"] * int(env["BYTEWAX_WORKERS_PER_PROCESS"])
        assert processes <= kafka_settings(resources).partitions_for(INPUT_TOPIC[flow])


@pytest.mark.parametrize("name", RENDERINGS)
def test_workloads_are_probed_limited_and_unprivileged(name: str) -> None:
    workloads = [*find(rendered(name), "StatefulSet"), *find(rendered(name), "Deployment")]
    assert len(workloads) == len(STATEFULSETS) + 1
    for workload in workloads:
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            check_resources(container)
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        for container in pod["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                handler = container[probe].get("httpGet") or container[probe]["tcpSocket"]
                assert handler["port"] in ports or handler["port"] in ports.values(), (workload["metadata"], probe)
            refs = [(next(iter(e)), next(iter(e.values()))["name"]) for e in container["envFrom"]]
            assert refs == [("configMapRef", "marketpipe-config"), ("secretRef", "marketpipe-secrets")]


@pytest.mark.parametrize("name", RENDERINGS)
def test_init_containers_give_every_process_its_address_and_recovery_partitions(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for statefulset in find(rendered(name), "StatefulSet"):
        sts_name, replicas = statefulset["metadata"]["name"], statefulset["spec"]["replicas"]
        namespace = statefulset["metadata"].get("namespace", "default")
        pod = pod_spec(statefulset)
        hostfile_init, recovery_init = pod["initContainers"]
        main = named(pod["containers"])["dataflow"]
        recovery_dir = named(main["volumeMounts"])["recovery"]["mountPath"]
        hostfile = tmp_path / sts_name / "hostfile.txt"
        hostfile.parent.mkdir()
        run_script(hostfile_init, f"{sts_name}-0", namespace, {"BYTEWAX_HOSTFILE_PATH": str(hostfile)})
        addresses = hostfile.read_text().split()
        service, port = statefulset["spec"]["serviceName"], named(main["ports"])["process"]["containerPort"]
        assert addresses == [f"{sts_name}-{i}.{service}.{namespace}.svc.cluster.local:{port}" for i in range(replicas)]

        held: list[str] = []
        for process in range(replicas):
            pod_name, directory = f"{sts_name}-{process}", tmp_path / sts_name / f"recovery-{process}"
            env = {"BYTEWAX_HOSTFILE_PATH": str(hostfile)}
            run_script(recovery_init, pod_name, namespace, env, replace=f"{recovery_dir} =>{directory} ")
            held += [path.name for path in directory.glob("part-*.sqlite3")]
            # What `python -m bytewax.run` makes of this pod's command and environment.
            for key in ("BYTEWAX_PROCESS_ID", "BYTEWAX_ADDRESSES", "BYTEWAX_RECOVERY_DIRECTORY"):
                monkeypatch.delenv(key, raising=False)
            for key, value in env_of(main).items():
                monkeypatch.setenv(key, value if isinstance(value, str) else pod_name)
            monkeypatch.setenv("BYTEWAX_HOSTFILE_PATH", str(hostfile))
            monkeypatch.setattr(sys, "argv", ["bytewax.run", *main["command"][3:]])
            args = bytewax_run._parse_args()
            assert (args.process_id, args.addresses, args.workers_per_process) == (process, ";".join(addresses), 1)
        partitions = int(env_of(recovery_init)["MARKETPIPE_RECOVERY_PARTITIONS"])
        assert sorted(held) == sorted(f"part-{n}.sqlite3" for n in range(partitions)), sts_name  # each once


@pytest.mark.parametrize("name", EVERYTHING)
def test_every_environment_variable_is_read_by_something(name: str) -> None:
    known = settings_env_names()
    for resource in rendered(name):
        if resource["kind"] in ("ConfigMap", "Secret"):
            keys = {*resource.get("data", {}), *resource.get("stringData", {})}
            assert keys <= known, f"{resource['metadata']['name']}: not settings: {sorted(keys - known)}"
        for container in containers(resource):
            for key in env_of(container):
                read = key in known or key in bytewax_env_names() or key in SCRIPT_ENV
                assert read, f"{resource['metadata']['name']}/{container['name']}: {key} is read by nothing"


@pytest.mark.parametrize("name", RENDERINGS)
def test_configuration_passes_the_settings_validation(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in config_env(rendered(name)).items():
        monkeypatch.setenv(key, value)
    for cls in SETTINGS_CLASSES:
        cls()  # a ValidationError names the variable
    assert set(CollectorSettings().venue_ids or ()) <= set(live_specs())


@pytest.mark.parametrize("name", EVERYTHING)
def test_one_image_everywhere(name: str) -> None:
    images = {container["image"] for resource in rendered(name) for container in containers(resource)}
    assert images == {"marketpipe:0.1.0" if name == "base" else "registry.example.com/marketpipe:0.1.0"}


@pytest.mark.parametrize("name", RENDERINGS)
def test_broadcaster_is_served_scaled_and_protected(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = rendered(name)
    [deployment] = find(resources, "Deployment", "broadcaster")
    assert "replicas" not in deployment["spec"]  # the HorizontalPodAutoscaler owns it
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    [container] = pod_spec(deployment)["containers"]
    assert container["command"] == ["python", "-m", "broadcaster"]
    env, ports = env_of(container), {p["name"]: p["containerPort"] for p in container["ports"]}
    for key, value in {**config_env(resources), **env}.items():
        monkeypatch.setenv(key, value)
    settings = BroadcasterSettings()
    assert (settings.broadcaster_host, settings.broadcaster_port) == ("0.0.0.0", ports["http"])
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(ports["http"])
    routes = (REPO / "broadcaster" / "app.py").read_text()
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"} and f'"{path}"' in routes

    [service] = find(resources, "Service", "broadcaster")
    [service_port] = service["spec"]["ports"]
    target = service_port["targetPort"]
    assert service_port["port"] == 80 and (ports[target] if isinstance(target, str) else target) == ports["http"]
    assert service["spec"]["selector"].items() <= labels.items()

    [hpa] = find(resources, "HorizontalPodAutoscaler", "broadcaster")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "broadcaster"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    [pdb] = find(resources, "PodDisruptionBudget", "broadcaster")
    assert pdb["spec"]["selector"]["matchLabels"] == selector


def test_overlays_size_the_deployment() -> None:
    base, small, production = (rendered(name) for name in RENDERINGS)

    def sts(resources: list[Resource]) -> dict[str, dict[str, Any]]:
        return {s["metadata"]["name"]: s for s in find(resources, "StatefulSet")}

    def partitions(statefulset: Resource) -> int:
        return int(env_of(pod_spec(statefulset)["initContainers"][1])["MARKETPIPE_RECOVERY_PARTITIONS"])

    def requests(statefulset: Resource) -> tuple[float, float]:
        wanted = named(pod_spec(statefulset)["containers"])["dataflow"]["resources"]["requests"]
        return quantity(wanted["cpu"]), quantity(wanted["memory"])

    for sts_name, statefulset in sts(small).items():
        assert statefulset["spec"]["replicas"] == 1
        assert all(s <= b for s, b in zip(requests(statefulset), requests(sts(base)[sts_name]), strict=True))
    for sts_name in ("collect-cex", "normalize-cex", "archive-raw", "archive-parquet", "load-postgres"):
        assert sts(production)[sts_name]["spec"]["replicas"] >= 2
    for sts_name, statefulset in sts(production).items():
        assert partitions(statefulset) >= partitions(sts(base)[sts_name])
        assert all(p >= b for p, b in zip(requests(statefulset), requests(sts(base)[sts_name]), strict=True))

    def hpa(resources: list[Resource]) -> tuple[int, int]:
        spec = find(resources, "HorizontalPodAutoscaler")[0]["spec"]
        return spec["minReplicas"], spec["maxReplicas"]

    assert hpa(small) <= hpa(base) and hpa(production)[0] > hpa(base)[0] and hpa(production)[1] > hpa(base)[1]

    def retention(resources: list[Resource]) -> dict[str, int]:
        return {t["spec"]["topicName"]: int(t["spec"]["config"]["retention.ms"]) for t in find(resources, "KafkaTopic")}

    assert all(retention(small)[t] < days for t, days in retention(base).items())
    assert all(retention(production)[t] >= days for t, days in retention(base).items())
    assert find(small, "Secret", "marketpipe-secrets") and not find(production, "Secret")  # production: out of band


def test_image_is_built_from_the_pinned_project_as_the_pods_user() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    constraint_lines = (K8S / "image" / "constraints.txt").read_text().splitlines()
    constraints = dict(line.split("==") for line in constraint_lines if line and not line.startswith("#"))
    for dependency in pyproject["project"]["dependencies"]:
        requirement = Requirement(dependency)
        [pin] = requirement.specifier
        assert constraints.get(canonicalize_name(requirement.name)) == pin.version, dependency

    dockerfile = (REPO / "Dockerfile").read_text()
    dockerignore = (REPO / ".dockerignore").read_text().splitlines()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", dockerfile, re.MULTILINE)
    assert "--constraint constraints.txt" in dockerfile and "tests" not in re.findall(r"^COPY (\S+)", dockerfile, re.M)
    assert next(line for line in dockerignore if line and not line.startswith("#")) == "*"  # an allow-list
    for package in (p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]):
        assert f"COPY {package} ./{package}" in dockerfile and f"!{package}/" in dockerignore
    assert not {"!tests/", "!data/", "!.venv/", "!var/", "!.git/"} & set(dockerignore)
    [user] = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    for workload in [*find(rendered("base"), "StatefulSet"), *find(rendered("base"), "Deployment")]:
        context = pod_spec(workload)["securityContext"]
        assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user
