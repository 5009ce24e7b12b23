"""PNG plots for an evaluated artifact: training curves, loss against steps, MAML figure 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from meta_core.artifact import Artifact  # noqa: E402
from meta_core.inner_loop import LearningRate, Params  # noqa: E402
from meta_core.tasks.sinusoid import X_RANGE, Sinusoid  # noqa: E402


def training_curves(directory: Path) -> Path | None:
    """Meta-training loss and validation metric against iterations, from metrics.jsonl."""
    path = directory / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("event") == "train"]
    val = [r for r in rows if r.get("event") == "val"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot([r["iteration"] for r in train], [r["loss"] for r in train], label="meta-batch")
    ax[0].plot([r["iteration"] for r in val], [r["loss"] for r in val], label="validation")
    ax[0].set(xlabel="iteration", ylabel="query loss after adaptation", yscale="log")
    ax[0].legend()
    ax[1].plot([r["iteration"] for r in val], [r["metric"] for r in val])
    ax[1].set(xlabel="iteration", ylabel="validation metric (MSE or accuracy)")
    fig.tight_layout()
    out = directory / "training_curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def steps_plot(directory: Path, report: dict[str, Any]) -> Path:
    """Query loss against inner steps for MAML and the baselines, one panel per shot count (or
    ways and shots); a fitted baseline, which takes no steps, is a dashed level with its band."""
    results = report["results"]
    keys = list(next(iter(results.values())))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for i, (method, by_key) in enumerate(results.items()):
            rows, color = by_key[key], f"C{i}"  # a method's colour in every panel
            if "fit" in rows:
                fit = rows["fit"]
                ax.axhline(fit["loss"], color=color, linestyle="--", label=f"{method} (fitted)")
                low, high = fit["loss"] - fit["loss_ci95"], fit["loss"] + fit["loss_ci95"]
                ax.axhspan(low, high, color=color, alpha=0.15)
                continue
            steps = [int(s) for s in rows]
            mean = [rows[str(s)]["loss"] for s in steps]
            ci = [rows[str(s)]["loss_ci95"] for s in steps]
            ax.errorbar(steps, mean, yerr=ci, color=color, marker="o", capsize=3, label=method)
        title = f"K = {key}" if key.isdigit() else key
        ax.set(title=title, xlabel="inner steps", ylabel="query loss", yscale="log")
        ax.legend()
    fig.tight_layout()
    out = directory / "loss_vs_steps.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def sinusoid_figure(
    directory: Path,
    art: Artifact,
    methods: dict[str, tuple[Params, LearningRate, list[str] | None]],
    lr: float,
    shots: int = 5,
    seed: int = 3,
) -> Path:
    """The MAML paper's figure 2: a true curve, K support points, predictions after 0/1/10
    steps, for MAML and the pretrained baseline."""
    g = torch.Generator().manual_seed(seed)
    amp, phase = Sinusoid.sample_functions(1, g)
    while amp.item() < 2.5:  # a clearly visible curve, as in the paper's figure
        amp, phase = Sinusoid.sample_functions(1, g)
    sx = torch.rand(shots, 1, generator=g) * (X_RANGE[1] - X_RANGE[0]) + X_RANGE[0]
    sy = Sinusoid.target(sx, amp[0], phase[0])
    grid = torch.linspace(*X_RANGE, 200).view(-1, 1)
    shown = [m for m in ("maml", "pretrained") if m in methods]
    fig, axes = plt.subplots(1, len(shown), figsize=(6 * len(shown), 4), squeeze=False)
    for ax, method in zip(axes[0], shown, strict=True):
        params = methods[method][0]
        ax.plot(grid, Sinusoid.target(grid, amp[0], phase[0]), "r", label="ground truth")
        ax.scatter(sx, sy, marker="^", color="k", zorder=5, label=f"{shots} support points")
        for steps, style in ((0, ":"), (1, "--"), (10, "-")):
            view = Artifact(art.path, art.manifest, art.model, params, {})
            fast = view.adapt(sx, sy, steps=steps, lr=lr) if steps else params
            ax.plot(grid, view.predict(fast, grid), style, label=f"after {steps} steps")
        ax.set(title=f"{method}, K = {shots}, step size {lr}", xlabel="x", ylabel="y")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = directory / "sinusoid_figure2.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
