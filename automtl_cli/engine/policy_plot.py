"""The searched policy as a picture: a layer × task grid, each cell coloured by its branch mix."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from automtl_cli.artifacts import atomic_write
from automtl_cli.errors import MissingDependency

__all__ = ["plot_policy"]

# shared, specific, skip
_COLOURS = torch.tensor([[0.15, 0.45, 0.85], [0.90, 0.35, 0.15], [0.85, 0.85, 0.85]])


def plot_policy(probs: torch.Tensor, nodes: list[str], tasks: list[str],
                path: str | os.PathLike) -> Path:
    """probs: [S, T, 3] probabilities of (shared, specific, skip); writes a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as e:
        raise MissingDependency("--plot needs matplotlib: pip install 'automtl[plot]'") from e
    rgb = (probs.float().unsqueeze(-1) * _COLOURS).sum(-2).clamp(0, 1)  # [S, T, 3]
    height = max(3.0, 0.22 * len(nodes) + 1.5)
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 3.0, height))
    ax.imshow(rgb.numpy(), aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(nodes)), nodes, fontsize=7)
    ax.set_xlabel("task")
    ax.set_ylabel("search node (input at the top)")
    for i in range(len(nodes)):
        for t in range(len(tasks)):
            k = int(probs[i, t].argmax())
            ax.text(t, i, ("sh", "sp", "sk")[k], ha="center", va="center", fontsize=6)
    ax.legend(handles=[Patch(color=_COLOURS[k].tolist(), label=label)
                       for k, label in enumerate(("shared", "specific", "skip"))],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title("searched policy: colour mixes the branch probabilities")
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return out
