"""Every part of the pipeline as real processes on 127.0.0.1, started in dependency order and stopped cleanly.

Servers: the Tansu broker, PostgreSQL (pgserver's binaries), the broadcaster, one exchange simulator per shipped
capture and the recorded Ethereum JSON-RPC node. Flows (each ``python -m bytewax.run``, with its dataflow API
serving ``/metrics`` on its own port): the two collectors, the two normalizers, both archives and the Postgres
loader. Sinks and normalizers start before the collectors, so the first record has somewhere to go.

Object storage is a local directory (``<workdir>/archive``), which is what ``ARCHIVE_URL`` defaults to; any
fsspec URL (``s3://...``) works the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson
from prometheus_client.parser import text_string_to_metric_families

from connectors.config import Settings
from connectors.kafka import ensure_topics
from connectors.recovery import init_process_partitions
from embedded.kafka import TansuBroker
from embedded.postgres import EmbeddedPostgres
from embedded.process import ManagedProcess, free_port, port_open, wait_until
from evm_rpc import RecordedRpcServer
from schemas import CEX_TOPICS, CHAIN_TOPICS
from simulator import Simulator
from simulator.fleet import start_fleet
from simulator.shipped import collector_config

__all__ = ["EVM_BLOCKS", "FlowProcess", "Stack"]

REPO = Path(__file__).resolve().parents[2]
MARKER = ".marketpipe-demo"
#: The recorded mainnet blocks the local node serves (data/ethereum).
EVM_BLOCKS = (17173049, 17173050)
#: Flows in start order: consumers first, collectors last.
FLOWS = (
    "normalize_cex",
    "normalize_evm",
    "archive_raw",
    "archive_parquet",
    "load_postgres",
    "collect_evm",
    "collect_cex",
)
#: Flows that keep Bytewax recovery state (the others resume from Kafka or from the archive's checkpoints).
RECOVERED = frozenset({"normalize_cex", "normalize_evm", "load_postgres"})
#: Archive files close this soon, so the summary can show them; production keeps the 15-minute default.
ROTATE_SECONDS = 15


@dataclass
class FlowProcess:
    """One flow process and the port of its dataflow API (``/metrics``)."""

    name: str
    process: ManagedProcess
    api_port: int
    finished_ok: bool = field(default=False)
    last_metrics: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Sample name with labels -> value, for the project's own counters (the last known ones once it ended)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return self.last_metrics
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("marketpipe_") and not sample.name.endswith("_created"):
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    samples[f"{sample.name}{{{labels}}}"] = sample.value
        self.last_metrics = samples
        return samples

    def check(self) -> None:
        """Raise with the log's tail when the flow died (a flow that ran to its end is fine)."""
        process = self.process.process
        if process is not None and process.poll() == 0:
            self.finished_ok = True
            return
        self.process.check_alive()


def prepare_workdir(workdir: Path) -> None:
    """A clean working directory: the previous demo's output is replaced (the broker starts empty too)."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise SystemExit(f"{workdir} is not empty and was not made by the demo; choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).touch()


class Stack:
    """The running system; use as a context manager (everything stops on exit, whatever happened)."""

    def __init__(self, workdir: Path, speed: float, broadcaster_port: int, say: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.speed = speed
        self.say = say
        self.archive = workdir / "archive"
        self.logs = workdir / "logs"
        self.broadcaster_port = broadcaster_port if not port_open("127.0.0.1", broadcaster_port) else free_port()
        self.flows: dict[str, FlowProcess] = {}
        self.simulators: dict[str, Simulator] = {}
        self.kafka: TansuBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.broadcaster: ManagedProcess | None = None
        self.node: RecordedRpcServer | None = None
        self._stack = contextlib.ExitStack()

    # -- addresses -----------------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        assert self.kafka is not None
        return self.kafka.bootstrap

    @property
    def dsn(self) -> str:
        assert self.postgres is not None
        return self.postgres.dsn

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.broadcaster_port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.broadcaster_port}/ws"

    def settings(self) -> Settings:
        return Settings(kafka_brokers=self.bootstrap)

    # -- start -----------------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def start(self) -> None:
        self.kafka = self._stack.enter_context(TansuBroker(self.workdir / "kafka"))
        config = self.settings()
        ensure_topics(config, [config.raw_topic, *CEX_TOPICS, *CHAIN_TOPICS, config.dead_letter_topic])
        self.say(f"Kafka (Tansu) on {self.bootstrap}; topics created")
        self.postgres = EmbeddedPostgres(self.workdir / "postgres")
        self.postgres.start()
        self._stack.callback(self.postgres.stop)
        self.say(f"PostgreSQL on {self.dsn}")
        self._start_broadcaster()
        self.say(f"broadcaster on {self.page_url}")
        self.node = RecordedRpcServer(self.workdir / "evm", head=EVM_BLOCKS[1]).start()
        self._stack.callback(self.node.stop)
        self.simulators = start_fleet(self.workdir / "simulator", self.speed)
        for simulator in self.simulators.values():
            self._stack.callback(simulator.stop)
        self.say(f"{len(self.simulators)} exchange simulators and the Ethereum JSON-RPC node ({self.node.url})")
        collector_file = self.workdir / "simulator" / "collector.json"
        endpoints = {venue: simulator.url for venue, simulator in self.simulators.items()}
        collector_file.write_bytes(orjson.dumps(collector_config(endpoints), option=orjson.OPT_INDENT_2))
        env = self._flow_env(collector_file)
        for name in FLOWS:
            self._start_flow(name, env)
        self.say(f"flows running: {', '.join(FLOWS)}")

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env.update({"KAFKA_BROKERS": self.bootstrap, "PYTHONPATH": str(REPO), "LOG_FORMAT": "text"})
        return env

    def _start_broadcaster(self) -> None:
        env = {**self._base_env(), "BROADCASTER_HOST": "127.0.0.1", "BROADCASTER_PORT": str(self.broadcaster_port)}
        argv = [sys.executable, "-m", "broadcaster"]
        self.broadcaster = ManagedProcess("broadcaster", argv, self.logs / "broadcaster.log", env=env, cwd=REPO)
        self.broadcaster.start()
        self._stack.callback(self.broadcaster.stop)

        def ready() -> bool:
            assert self.broadcaster is not None
            self.broadcaster.check_alive()
            with urllib.request.urlopen(f"{self.page_url}ready", timeout=2) as response:
                return bool(response.status == 200)

        wait_until(ready, 60, "the broadcaster", interval=0.2)

    def _flow_env(self, collector_file: Path) -> dict[str, str]:
        assert self.node is not None
        return {
            **self._base_env(),
            "DATABASE_URL": self.dsn,
            "ARCHIVE_URL": str(self.archive),
            "ARCHIVE_ROTATE_SECONDS": str(ROTATE_SECONDS),
            "COLLECTOR_CONFIG": str(collector_file),
            "EVM_RPC_URL": self.node.url,
            "EVM_CONFIRMATIONS": "0",
            "EVM_START_BLOCK": str(EVM_BLOCKS[0]),
            "EVM_END_BLOCK": str(EVM_BLOCKS[1]),
            "BYTEWAX_DATAFLOW_API_ENABLED": "true",
        }

    def _start_flow(self, name: str, env: dict[str, str]) -> None:
        run_dir = self.workdir / "run" / name  # each flow's cwd: Bytewax writes dataflow.json there
        run_dir.mkdir(parents=True, exist_ok=True)
        args: list[str] = []
        if name in RECOVERED:
            recovery = self.workdir / "recovery" / name
            init_process_partitions(recovery, partitions=1, process_id=0, processes=1)
            args = ["-r", str(recovery), "-s", "5", "-b", "0"]
        port = free_port()
        argv = [sys.executable, "-m", "bytewax.run", f"flows.{name}:flow", *args]
        flow_env = {**env, "BYTEWAX_DATAFLOW_API_PORT": str(port)}
        process = ManagedProcess(name, argv, self.logs / f"{name}.log", env=flow_env, cwd=run_dir).start()
        self.flows[name] = FlowProcess(name, process, port)
        self._stack.callback(process.stop)

    # -- state -----------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise when any flow or server died."""
        for flow in self.flows.values():
            flow.check()
        if self.broadcaster is not None:
            self.broadcaster.check_alive()

    def recorded_input_sent(self) -> bool:
        """Every simulator played each recorded connection to its end, and collect_evm reached its end block."""
        for simulator in self.simulators.values():
            info = simulator.info()
            played = info["played"]
            if any(played.get(conn["conn"], 0) < 1 for conn in info["connections"] if conn["frames"]):
                return False
        return self.flows["collect_evm"].finished_ok

    def stop_flows(self) -> None:
        """Collectors first, then everything downstream, each given time to finish what it holds."""
        for name in reversed(FLOWS):
            if name in self.flows:
                self.flows[name].process.stop()
