"""Per-process recovery storage for a Bytewax cluster.

Bytewax keeps recovery state in ``part-<n>.sqlite3`` partition files and only needs the cluster as a whole to hold
every partition once. So each process can keep its own partitions on its own volume (a Kubernetes StatefulSet's
``volumeClaimTemplates``): process ``i`` of ``P`` owns partitions ``i, i + P, i + 2P, ...``.

    python -m connectors.recovery DIR --partitions N --process-id I --processes P

creates the partitions this process owns if they are missing and never touches existing ones, so it is safe to
run before every start (the Kubernetes init container does). ``N`` is fixed when the flow is first deployed; set
it to the largest process count you will scale to.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bytewax.recovery import init_db_dir

__all__ = ["init_process_partitions", "owned_partitions"]


def owned_partitions(partitions: int, process_id: int, processes: int) -> list[int]:
    """Partition numbers process ``process_id`` of ``processes`` holds."""
    if not 0 <= process_id < processes:
        raise ValueError(f"process id {process_id} is not in 0..{processes - 1}")
    if partitions < processes:
        raise ValueError(f"{partitions} recovery partitions cannot be spread over {processes} processes")
    return list(range(process_id, partitions, processes))


def init_process_partitions(directory: Path, partitions: int, process_id: int, processes: int) -> list[Path]:
    """Create the missing partitions this process owns in ``directory``; returns the paths it holds."""
    directory.mkdir(parents=True, exist_ok=True)
    owned = [directory / f"part-{n}.sqlite3" for n in owned_partitions(partitions, process_id, processes)]
    missing = [path for path in owned if not path.exists()]
    if missing:
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            init_db_dir(Path(scratch), partitions)
            for path in missing:
                shutil.move(str(Path(scratch) / path.name), path)
    return owned


def main() -> None:
    parser = argparse.ArgumentParser(description="Create this process's Bytewax recovery partitions.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--processes", type=int, required=True)
    args = parser.parse_args()
    held = init_process_partitions(args.directory, args.partitions, args.process_id, args.processes)
    print(f"process {args.process_id} holds {', '.join(p.name for p in held)}")


if __name__ == "__main__":
    main()
