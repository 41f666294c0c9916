"""Every shipped capture served at once, and the collector configuration that collects them all.

    python -m simulator.fleet --workdir var/simulator --speed 1
    COLLECTOR_CONFIG=var/simulator/collector.json python -m bytewax.run flows.collect_cex:flow

One simulator process per capture in ``data/cex/cryptofeed``, each on its own free port; the configuration
(``<workdir>/collector.json``) subscribes what each capture recorded, at its simulator. Runs until interrupted,
then stops every simulator.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import orjson

from simulator import Simulator
from simulator.shipped import SHIPPED, collector_config

__all__ = ["start_fleet"]


def start_fleet(workdir: Path, speed: float, venues: list[str] | None = None) -> dict[str, Simulator]:
    """Started simulators, venue -> simulator (every shipped venue unless ``venues`` names some)."""
    simulators: dict[str, Simulator] = {}
    try:
        for venue in venues or list(SHIPPED):
            simulators[venue] = Simulator(SHIPPED[venue].path, workdir, speed=speed).start()
    except BaseException:
        for simulator in simulators.values():
            simulator.stop()
        raise
    return simulators


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.fleet", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("var/simulator"), help="logs and collector.json")
    parser.add_argument("--speed", type=float, default=1.0, help="playback speed; 0 = no pauses")
    parser.add_argument("--venues", help=f"comma-separated subset of {', '.join(SHIPPED)}")
    args = parser.parse_args(argv)
    venues = [v.strip() for v in args.venues.split(",")] if args.venues else None
    unknown = sorted(set(venues or ()) - set(SHIPPED))
    if unknown:
        parser.error(f"no shipped capture for {', '.join(unknown)}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    simulators = start_fleet(args.workdir, args.speed, venues)
    try:
        config = args.workdir / "collector.json"
        endpoints = {venue: simulator.url for venue, simulator in simulators.items()}
        config.write_bytes(orjson.dumps(collector_config(endpoints), option=orjson.OPT_INDENT_2))
        for venue, url in endpoints.items():
            print(f"{venue:16} {url}  ({SHIPPED[venue].path.name})")
        print(f"\nCOLLECTOR_CONFIG={config} python -m bytewax.run flows.collect_cex:flow\n(Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while all(simulator.process.running for simulator in simulators.values()):
                time.sleep(1.0)
    finally:
        for simulator in simulators.values():
            simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
