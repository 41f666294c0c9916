"""Run the whole pipeline on its embedded default and say where the results are.

    python -m embedded.demo [--speed 1] [--duration SECONDS] [--serve] [--workdir var/demo]

Exchange simulators replay the recorded captures in ``data/cex`` over real websockets at their recorded pace
and a local JSON-RPC node serves the recorded Ethereum blocks in ``data/ethereum``; the collectors, normalizers,
archives, Postgres loader and broadcaster process them as they would live venues and a live node. Progress is
printed while it runs. It stops once the recorded input is fully processed (or after ``--duration``, or on
Ctrl-C) and prints a summary; ``--serve`` keeps everything running after the input is processed, for the web
page and SQL, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from connectors.configuration import check_all
from embedded.demo.report import Progress, progress, render, summarize
from embedded.demo.stack import ROTATE_SECONDS, Stack, prepare_workdir

REPO = Path(__file__).resolve().parents[2]
TICK_S = 3.0
#: After the recorded input is sent, how long the pipeline may take to drain before the demo gives up waiting.
DRAIN_LIMIT_S = 180.0
#: Seconds without any change, once the input is sent, that mean everything is processed (archives included).
QUIET_S = ROTATE_SECONDS + 2 * TICK_S


def say(message: str) -> None:
    print(f"  {message}", flush=True)


def watch(stack: Stack, duration: float | None) -> bool:
    """Print progress until the input is processed or ``duration`` passes; True when everything drained."""
    started = time.monotonic()
    sent_at: float | None = None
    last: Progress | None = None
    quiet_since = time.monotonic()
    while True:
        time.sleep(TICK_S)
        stack.check()
        now = time.monotonic()
        current = progress(stack)
        print(current.line(now - started), flush=True)
        if current != last:
            last, quiet_since = current, now
        if sent_at is None and stack.recorded_input_sent():
            sent_at = now
            say("all recorded input sent; waiting for the pipeline to drain ...")
        if sent_at is not None and now - quiet_since >= QUIET_S:
            return True
        if sent_at is not None and now - sent_at > DRAIN_LIMIT_S:
            say(f"still changing {DRAIN_LIMIT_S:.0f}s after the input ended; stopping anyway")
            return False
        if duration is not None and now - started >= duration:
            say(f"--duration {duration:.0f}s reached")
            return False


def run(workdir: Path, speed: float, duration: float | None, serve: bool, port: int) -> int:
    problems = check_all()
    if problems:
        print("The configuration cannot work:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 2
    prepare_workdir(workdir)
    print(f"marketpipe demo: everything under {workdir}", flush=True)
    with Stack(workdir, speed, port, say) as stack:
        started = False
        try:
            stack.start()
            started = True
            print(f"Live page: {stack.page_url}   (Ctrl-C stops and prints the summary)", flush=True)
            drained = watch(stack, duration)
            if drained and serve:
                print(render(summarize(stack), stack, still_running=True), flush=True)
                print("\nStill serving (--serve): open the page, query Postgres; Ctrl-C stops.", flush=True)
                while True:
                    time.sleep(TICK_S)
                    stack.check()
        except KeyboardInterrupt:
            print("\nInterrupted.", flush=True)
        say("stopping the flows (collectors first) ...")
        stack.stop_flows()
        if started:
            print(render(summarize(stack), stack, still_running=False), flush=True)
        say("stopping the servers ...")
    print("Stopped; nothing is left running.", flush=True)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m embedded.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "demo", help="replaced on every run")
    parser.add_argument("--speed", type=float, default=1.0, help="playback speed of the recordings (0 = no pauses)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds at most")
    parser.add_argument("--serve", action="store_true", help="keep running after the input is processed")
    parser.add_argument("--port", type=int, default=8080, help="broadcaster port (a free one if taken)")
    args = parser.parse_args()
    sys.exit(run(args.workdir.resolve(), args.speed, args.duration, args.serve, args.port))


if __name__ == "__main__":
    main()
