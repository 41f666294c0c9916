"""A loader told to stop while its writer thread is still retrying (the database is away) exits at once.

The write is a stand-in that never returns, as `retry_transient` does not while the database stays away; the
process is interrupted the way Ctrl-C or a Bytewax shutdown interrupts it. The server side of such a stop is
covered by the loader's fault tests: an unfinished transaction is rolled back and written again on restart.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from tests.harness import REPO

SCRIPT = textwrap.dedent(
    """
    import threading
    from connectors.postgres_pipeline import WriteBehind

    def database_away():
        print("writing", flush=True)
        threading.Event().wait()  # retrying forever

    pipeline = WriteBehind("postgres-writer")
    try:  # the signal may land while submit still waits for the thread to start
        pipeline.submit(database_away, print)
        pipeline.wait()  # as the next batch, or the epoch's snapshot, does
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
)


def test_an_interrupted_loader_exits_while_its_write_still_waits_for_the_database() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "writing\n"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)  # a writer thread the interpreter waited for: never
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out == "interrupted\n"
