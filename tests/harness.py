"""Running flows as real processes against the embedded servers, for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from connectors.config import Settings
from embedded.process import ManagedProcess

REPO = Path(__file__).resolve().parents[1]


def flow_env(bootstrap: str, **extra: str) -> dict[str, str]:
    """Environment for a flow process talking to the embedded broker."""
    env = dict(os.environ)
    env.update({"KAFKA_BROKERS": bootstrap, "PYTHONPATH": str(REPO), "TOPIC_PARTITIONS": "default=3,raw=3"})
    env.update(extra)
    return env


def settings_for(env: dict[str, str]) -> Settings:
    return Settings(**{k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields})  # type: ignore[arg-type]


def bytewax_argv(spec: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "bytewax.run", spec, *args]


def run_flow(spec: str, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a flow to completion; raises with its output when it fails."""
    result = subprocess.run(
        bytewax_argv(spec, *args), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"{spec} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def start_flow(spec: str, env: dict[str, str], log: Path, *args: str) -> ManagedProcess:
    """Start a flow in the background (own process group, so kill() is a real crash)."""
    return ManagedProcess(spec, bytewax_argv(spec, *args), log, env=env, cwd=REPO).start()


def init_recovery(directory: Path, partitions: int = 1) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "bytewax.recovery", str(directory), str(partitions)],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
