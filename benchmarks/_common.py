"""Shared helpers for the benchmark scripts: machine description, medians, RESULTS.md sections."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
DEFAULT_PBC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pbc"


# CPU features that decide which kernels (and engines, precisions) are fast
FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}


def cpu() -> tuple[str, list[str]]:
    """The CPU model name and which of FLAGS it has (from /proc/cpuinfo)."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", "unknown CPU", platform.processor()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return name, [label for flag, label in FLAGS.items() if flag in flags]


def machine() -> str:
    """CPU (model and flags), cores, memory, Python and torch: printed by every benchmark."""
    name, flags = cpu()
    cpu_text = f"{name} ({', '.join(flags) or 'no AVX2/AVX-512/VNNI/BF16'})"
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    import torch

    return (
        f"{cpu_text}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def table_row(cells) -> str:
    """One row of a Markdown table."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table_head(titles) -> list[str]:
    """A Markdown table's header row and the rule under it."""
    titles = list(titles)
    return [table_row(titles), "|" + "---|" * len(titles)]


def write_section(name: str, body: str) -> None:
    """Replace the block between <!-- name:start --> and <!-- name:end --> in RESULTS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
