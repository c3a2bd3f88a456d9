"""Figures people would rather see than read: learning curves and per-slice error rates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

AXIS_LABELS = {"dev_cer": "dev CER, greedy (%)"}


def plot_learning_curve(curves: Mapping[str, Sequence[dict]], path: str | Path, key: str = "dev_cer") -> Path:
    """curves: label → history points {"minutes", key}. Writes a PNG of ``key`` against training minutes."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        ax.plot([p["minutes"] for p in points], [100 * p[key] for p in points], marker="o", label=label)
    ax.set_xlabel("training minutes")
    ax.set_ylabel(AXIS_LABELS.get(key, f"{key} (%)"))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_slices(rows: Sequence[tuple[str, float, float, float]], path: str | Path, title: str = "CER by slice") -> Path:
    """rows: (slice label, value, ci low, ci high) as fractions. Writes a horizontal bar chart."""
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    labels = [r[0] for r in rows]
    values = [100 * r[1] for r in rows]
    err = [[100 * (r[1] - r[2]) for r in rows], [100 * (r[3] - r[1]) for r in rows]]
    ax.barh(labels, values, xerr=err, color="#4c72b0", capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel("%")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_before_after(rows: Sequence[tuple[str, float, float]], path: str | Path, title: str, ylabel: str,
                      labels: tuple[str, str] = ("before", "after")) -> Path:
    """rows: (group label, before, after) as fractions. Writes paired bars per group."""
    import numpy as np

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, [100 * r[1] for r in rows], 0.4, label=labels[0])
    ax.bar(x + 0.2, [100 * r[2] for r in rows], 0.4, label=labels[1])
    ax.set_xticks(x, [r[0] for r in rows])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
