"""The benchmark report as people read it: machine facts, a rich table, a bar chart, Markdown for
docs/BENCHMARKS.md."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from photosift.bench.meter import CORES


def machine_info() -> dict[str, Any]:
    import platform

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import onnxruntime as ort
    from PIL import __version__ as pil_version

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0
    return {
        "cpu": cpu,
        "cores": CORES,
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "pillow": pil_version,
        "platform": platform.platform(),
    }


def plot(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in report["stages"] if s["photos"]]
    names = [s["name"] for s in stages]
    rates = [s["photos_per_s"] for s in stages]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(names) + 1.5))
    colors = [
        "#d62728" if n == "naive" else "#2ca02c" if n in ("pipeline", "classify_cli") else "#1f77b4"
        for n in names
    ]
    ax.barh(names, rates, color=colors)
    ax.set_xscale("log")
    limit = report["limit"]["photos_per_s"]
    ax.axvline(limit, color="k", linestyle="--", label=f"limit {limit:.1f} photos/s")
    for y, r in enumerate(rates):
        ax.text(r, y, f" {r:.1f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("photos/s (log scale)")
    m = report["machine"]
    ax.set_title(
        f"photosift bench — {report['model']['name']} ({report['model']['precision']}), {m['cores']} cores, {m['cpu']}",
        fontsize=9,
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def render(report: dict[str, Any]) -> Any:
    """A rich renderable: the stage table and the headline numbers."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = Table(
        title=f"photosift bench — {report['corpus']['files']} files, mean {report['corpus']['mean_mb']} MB, model {report['model']['name']}"
    )
    for col in (
        "stage",
        "photos",
        "photos/s",
        "ms/photo",
        "core-ms/photo",
        "CPU util",
        "peak RSS MB",
        "others",
        "what",
    ):
        t.add_column(col, justify="left" if col in ("stage", "what") else "right")
    for s in report["stages"]:
        t.add_row(
            s["name"],
            str(s["photos"]),
            f"{s['photos_per_s']:.1f}",
            f"{s['ms_per_photo']:.1f}",
            f"{s['core_ms_per_photo']:.1f}",
            f"{s['cpu_util']:.0%}",
            f"{s['peak_rss_mb']:.0f}",
            f"{s['other_cores']:.2f}",
            s["note"],
        )
    from photosift.bench import cluster

    lines = summary_lines(report) + cluster.summary_lines(report)
    for key in ("faces", "memory", "rescan", "rescan_big", "overview", "corrections", "cold_start", "find"):
        if key in report:
            lines.append(f"{key}: {json.dumps(report[key])}")
    return Group(t, *(Text(line) for line in lines))


def summary_lines(
    report: dict[str, Any],
    strong: Callable[[str], str] = str,
    code: Callable[[str], str] = str,
) -> list[str]:
    """The limit and the speed-ups in sentences; ``strong``/``code`` add Markdown where it is wanted."""
    lim = report["limit"]
    fraction = f"{lim['pipeline_fraction']:.1%}"
    lines = [
        f"Limit: {lim['cores']} cores / ({lim['decode_core_ms']} + {lim['infer_core_ms']}) core-ms = "
        f"{strong(str(lim['photos_per_s']) + ' photos/s')}; pipeline at {strong(fraction)} "
        f"of it, {strong(str(report['speedup_vs_naive']) + '×')} the naive loop.",
        f"With face detection (+{lim['people_core_ms']} core-ms/photo) the limit is "
        f"{lim['photos_per_s_with_people']} photos/s; the pipeline reaches {lim['pipeline_with_people_fraction']:.1%} of it.",
    ]
    for key in ("classify_cli", "classify_cli_no_people"):
        if key in report:
            c = report[key]
            lines.append(
                f"{code(key)} steady state: {strong(str(c['steady_photos_per_s']) + ' photos/s')} = "
                f"{strong(str(c['speedup_vs_naive']) + '×')} naive, {c['fraction_of_limit']:.1%} of its limit."
            )
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (docs/BENCHMARKS.md is made from these)."""
    lines = [
        "| stage | photos | photos/s | ms/photo | core-ms/photo | CPU util | peak RSS MB | other procs (cores) | what |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report["stages"]:
        lines.append(
            f"| {s['name']} | {s['photos']} | {s['photos_per_s']:.1f} | {s['ms_per_photo']:.1f} | "
            f"{s['core_ms_per_photo']:.1f} | {s['cpu_util']:.0%} | {s['peak_rss_mb']:.0f} | {s['other_cores']:.2f} | {s['note']} |"
        )
    lines += ["", *summary_lines(report, strong=lambda text: f"**{text}**", code=lambda text: f"`{text}`")]
    return "\n".join(lines)
