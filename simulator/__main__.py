"""``python -m simulator --capture FILE --port N [--speed X]``: serve a recorded capture as a live venue."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from simulator.recording import load_recording
from simulator.server import SimulatorServer


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--capture", required=True, help="capture file (data/cex/...)")
    parser.add_argument("--port", type=int, required=True, help="TCP port for websockets and HTTP")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--speed", type=float, default=1.0, help="playback speed; 2 = twice as fast, 0 = no pauses")
    parser.add_argument("--venue", help="venue of hftbacktest captures (cryptofeed captures name theirs)")
    parser.add_argument(
        "--match-timeout", type=float, default=2.0, help="seconds to wait for subscriptions before a partial match"
    )
    args = parser.parse_args(argv)
    if args.speed < 0:
        parser.error("--speed must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s simulator: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per HTTP request is too many
    try:
        recording = load_recording(args.capture, args.venue)
    except (OSError, ValueError, KeyError) as exc:
        print(f"simulator: cannot load {args.capture}: {exc}", file=sys.stderr)
        return 2
    server = SimulatorServer(recording, args.host, args.port, args.speed, args.match_timeout)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT is the way to stop it
        asyncio.run(server.serve_forever())
    return 0


if __name__ == "__main__":
    sys.exit(main())
