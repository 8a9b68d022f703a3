"""PNG plots of the benchmarks (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_throughput(result: dict, path: Path) -> None:
    """images/s against batch size, one panel per model, one line per configuration."""
    models = result["models"]
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(6.5 * max(1, len(models)), 4.8), squeeze=False)
    head = result.get("headline")
    for ax, (name, info) in zip(axes[0], models.items()):
        configs: dict[str, list[tuple[int, float]]] = {}
        for c in info["cells"]:
            configs.setdefault(c["config"], []).append((c["batch"], c["images_per_s"]))
        for config, points in configs.items():
            points.sort()
            ax.plot([b for b, _ in points], [v for _, v in points], marker="o", label=config)
        if head and name.startswith("rd/efficientnet_lite0"):
            ax.axhline(head["baseline_images_per_s"], color="k", linestyle="--", label="reference way (baseline)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_title(f"{name} ({info['flops']['total_gflop']:.2f} GFLOP/img)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency_cdf(runs: list[dict], path: Path) -> None:
    """Empirical CDF of end-to-end latency (captured → verdict read back), one line per run."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        lat = np.sort(np.asarray(run["latencies_ms"], dtype=float))
        if lat.size:
            ax.plot(lat, np.arange(1, lat.size + 1) / lat.size, label=run["label"])
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (captured-at → verdict read back)")
    ax.set_ylabel("fraction of frames")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
