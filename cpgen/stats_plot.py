"""``cpgen stats --plot FILE``: the main charts of a stats result as one PNG, with matplotlib.

matplotlib is an optional extra (``pip install 'cpgen[plot]'``) imported only here, when a plot
is asked for; the Agg canvas is used directly (no pyplot, no GUI backend).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from cpgen.errors import DataError, UsageError

LONG_TAIL = 20  # largest / smallest non-zero count above which counts use a log scale
COLORS = {
    "all": "tab:gray",
    "instances": "tab:blue",
    "original": "tab:blue",
    "generated": "tab:orange",
    "pasted": "tab:red",
    "compare": "tab:green",
    "as base": "tab:blue",
    "as patch": "tab:orange",
    "in --compare": "tab:green",
}


def check_available() -> None:
    """Refuse ``--plot`` before any work when matplotlib is missing (exit 2)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib, which is not installed",
            hint="pip install 'cpgen[plot]' (or leave --plot out)",
        ) from None


def _counts_chart(axes: Any, names: list[str], series: dict[str, list[int]], title: str) -> None:
    """Grouped bars per category, sorted by the first series, log scale when long-tailed."""
    order = sorted(range(len(names)), key=lambda k: -sum(s[k] for s in series.values()))
    width = 0.8 / max(1, len(series))
    for j, (label, values) in enumerate(series.items()):
        axes.bar(
            [k + j * width for k in range(len(order))],
            [values[k] for k in order],
            width=width,
            label=label,
            color=COLORS.get(label),
        )
    axes.set_xticks([k + width * (len(series) - 1) / 2 for k in range(len(order))])
    axes.set_xticklabels(
        [names[k] for k in order], rotation=90, fontsize=6 if len(names) > 30 else 8
    )
    nonzero = [v for values in series.values() for v in values if v > 0]
    if nonzero and max(nonzero) / min(nonzero) > LONG_TAIL:
        axes.set_yscale("log")
        title += " (log scale)"
    axes.set_title(title)
    axes.legend(fontsize=8)


def _histogram(axes: Any, summary: dict[str, Any], title: str, xlabel: str) -> None:
    edges, counts = summary["bins"], summary["counts"]
    axes.bar(edges[:-1], counts, width=edges[1] - edges[0], align="edge", edgecolor="black")
    axes.set_xlim(0, 1)
    axes.set_title(title)
    axes.set_xlabel(xlabel)


def plot(result: dict[str, Any], path: Path) -> None:
    """Write the charts of a ``cpgen stats`` result to ``path`` (PNG)."""
    check_available()
    from matplotlib.figure import Figure

    rows = result["categories"]
    names = [str(r["name"]) for r in rows]
    if result["kind"] == "cutmix":
        figure = Figure(figsize=(12, 4.5), layout="constrained")
        left, right = figure.subplots(1, 2, width_ratios=[2, 1])
        series = {"as base": [r["base"] for r in rows], "as patch": [r["patch"] for r in rows]}
        if "compare" in result:
            series["in --compare"] = [r["compare_images"] for r in rows]
        _counts_chart(left, names, series, "images per class")
        _histogram(right, result["base_weight"], "base weight", "weight of the base class")
    else:
        parts = list(result["parts"])
        cpgen_output = result["kind"] == "cpgen"
        panels = 3 if cpgen_output and result["visibility"]["available"] else 2
        figure = Figure(figsize=(6 * panels, 5), layout="constrained")
        axes = figure.subplots(1, panels, width_ratios=[3] + [1] * (panels - 1))
        if parts:
            series = {name: [r[f"{name}_instances"] for r in rows] for name in parts}
        else:
            series = {"instances": [r["instances"] for r in rows]}
        if cpgen_output:
            series["pasted"] = [r["pasted"] for r in rows]
        _counts_chart(axes[0], names, series, "instances per category")
        sizes = {"all": result["sizes"], **{n: p["sizes"] for n, p in result["parts"].items()}}
        width = 0.8 / len(sizes)
        for j, (name, buckets) in enumerate(sizes.items()):
            axes[1].bar(
                [k + j * width for k in range(3)],
                list(buckets.values()),
                width,
                label=name,
                color=COLORS.get(name),
            )
        axes[1].set_xticks([k + width * (len(sizes) - 1) / 2 for k in range(3)])
        axes[1].set_xticklabels(["small", "medium", "large"])
        axes[1].set_title("instance sizes (COCO area buckets)")
        axes[1].legend(fontsize=8)
        if panels == 3:
            _histogram(
                axes[2],
                result["visibility"],
                "occluded target objects",
                "visible area / original area",
            )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    from cpgen.images import atomic_write_bytes

    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
