"""The command line's wall time per command, this checkout beside an earlier commit.

A lab's admin runs ``hematovision users ...`` and ``models ...`` by hand and in scripts; each
opens the database (and brings its schema up to date) and should answer at once. Side by side,
interleaved: the same commands from this checkout's ``src`` and from a git worktree of
``--against`` (``PYTHONPATH`` first on the path, the same virtual environment), each on its own
fresh data folder (the first run of each creates the database, so it is left out of the median).

    python benchmarks/bench_cli_startup.py [--against da14487] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, table_head, table_row, write_section

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = next((ROOT / "src" / "hematovision" / "assets" / "samples").glob("neutrophil_*.jpg"))
COMMANDS = {
    "`hematovision --help`": ["--help"],
    "`users list`": ["users", "list"],
    "`models list`": ["models", "list"],
    "`predict` one image": ["predict", str(SAMPLE)],
}


def seconds(src: Path, args: list[str], data: Path) -> float:
    """Wall time of ``python -m hematovision ARGS`` with ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(src), "HEMATOVISION_DATA_DIR": str(data)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hematovision", "-q", *args],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def worktree(ref: str, where: Path) -> Path:
    """A checkout of ``ref`` (detached) under ``where``: its ``src``."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(where), ref], check=True
    )
    return where / "src"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--against", default="da14487", help="the earlier commit (default: before lazy imports)"
    )
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = {
            args.against: worktree(args.against, tmp / "earlier"),
            "this checkout": ROOT / "src",
        }
        try:
            times = {(c, s): [] for c in COMMANDS for s in sources}
            for repeat in range(args.repeats + 1):  # interleaved, so that a slow moment hits both
                for (command, source), spent in times.items():
                    data = tmp / f"data-{list(sources).index(source)}"
                    took = seconds(sources[source], COMMANDS[command], data)
                    if repeat:  # the first made the database
                        spent.append(took)
                print(f"round {repeat} done")
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "earlier")]
            )
    lines = [
        "## The command line's start: lazy imports (issue 10)",
        "",
        f"Machine: {machine()}. Wall time of `python -m hematovision -q COMMAND` (a new process "
        f"each time, an existing SQLite database), median of {args.repeats}, interleaved; "
        f"`{args.against}` run from a git worktree on the same virtual environment.",
        "",
        *table_head(["command", f"{args.against}, s", "this checkout, s", "ratio"]),
    ]
    for command in COMMANDS:
        before, after = (statistics.median(times[command, s]) for s in sources)
        lines.append(
            table_row([command, f"{before:.2f}", f"{after:.2f}", f"{before / after:.2f}x"])
        )
    body = "\n".join(lines)
    print(body)
    write_section("cli_startup", body)


if __name__ == "__main__":
    main()
