"""The picture that makes a soft decision tree readable (as in Frosst & Hinton's figures): the
learned inner-node filters of the top levels as images, the class distribution at every leaf, and
the path a few test images take to the leaf of greatest path probability.

Each run with a tree student writes it as ``<role>_soft_tree.png`` in the run folder and as the
TensorBoard image ``<role>/soft_tree``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdexp.models.soft_tree import SoftDecisionTree

log = logging.getLogger("kdexp")

MAX_LEVELS = 4  # filters drawn for the top levels only: 1 + 2 + 4 + 8 nodes


def max_path(tree: SoftDecisionTree, x: Tensor) -> tuple[Tensor, Tensor]:
    """For each image: the leaf of greatest path probability [B] and the inner nodes on the way
    to it [B, depth] (breadth-first node indices, root first)."""
    with torch.no_grad():
        leaf = tree.route(x).path.argmax(dim=1)
    nodes = []
    for level in range(tree.depth):
        position = leaf >> (tree.depth - level)  # the ancestor's position on this level
        nodes.append(2**level - 1 + position)
    return leaf, torch.stack(nodes, dim=1)


def tree_figure(tree: SoftDecisionTree, images: Tensor, labels: Tensor | None = None) -> Any:
    """A matplotlib Figure: filters (levels 0..3), leaf distributions, paths of ``images``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = min(tree.depth, MAX_LEVELS)
    columns = max(2 ** (levels - 1), len(images))
    filters = tree.inner.weight.detach().float().cpu().reshape(-1, *tree.input_shape).mean(1)
    leaf, nodes = max_path(tree, images.to(tree.inner.weight.device))
    leaf_probs = tree.leaf_log_probs().detach().float().exp().cpu()
    fig = plt.figure(figsize=(1.6 * columns, 1.7 * (levels + 3)), layout="constrained")
    grid = fig.add_gridspec(levels + 3, columns)
    for level in range(levels):
        count = 2**level
        for j in range(count):
            node = count - 1 + j
            # centre each level's nodes over the columns, like a drawn tree
            start = (columns * (2 * j + 1)) // (2 * count)
            ax = fig.add_subplot(grid[level, min(start, columns - 1)])
            weights = filters[node]
            limit = float(weights.abs().max()) or 1.0
            ax.imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"node {node}", fontsize=7)
            ax.axis("off")
    ax = fig.add_subplot(grid[levels, :])
    ax.imshow(leaf_probs.T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlabel(f"leaf (0..{len(leaf_probs) - 1})")
    ax.set_ylabel("class")
    ax.set_title("class distribution at each leaf (softmax of the leaf's logits)", fontsize=9)
    for i in range(len(images)):
        ax = fig.add_subplot(grid[levels + 1 :, i])
        ax.imshow(images[i].detach().float().cpu().mean(0), cmap="gray")
        turns = "".join("R" if (int(leaf[i]) >> (tree.depth - 1 - d)) & 1 else "L" for d in range(tree.depth))
        q = leaf_probs[int(leaf[i])]
        truth = f"\ntrue class {int(labels[i])}" if labels is not None else ""
        ax.set_title(
            f"path {turns}\nnodes {','.join(map(str, nodes[i, :4].tolist()))}…\n"
            f"leaf {int(leaf[i])} → class {int(q.argmax())} ({float(q.max()):.2f}){truth}",
            fontsize=7,
        )
        ax.axis("off")
    fig.suptitle(f"soft decision tree, depth {tree.depth}: filters of levels 0-{levels - 1}, leaves, paths")
    return fig


def write_tree_pictures(
    models: dict[str, nn.Module], datamodule: Any, output_dir: Path, loggers: list[Any], examples: int = 4
) -> list[Path]:
    """For every soft-tree model of the run: the PNG in ``output_dir`` and a TensorBoard image.
    A failure here is logged, never raised: the run's results are already written."""
    written = []
    trees = {role: m for role, m in models.items() if isinstance(m, SoftDecisionTree)}
    if not trees:
        return written
    try:
        import matplotlib.pyplot as plt

        images, labels = next(iter(datamodule.test_dataloader()))[:2]
        images, labels = images[:examples], labels[:examples]
        for role, tree in trees.items():
            fig = tree_figure(tree, images, labels)
            path = Path(output_dir) / f"{role}_soft_tree.png"
            fig.savefig(path, dpi=110)
            written.append(path)
            for logger in loggers:
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_figure"):
                    experiment.add_figure(f"{role}/soft_tree", fig, close=False)
            plt.close(fig)
    except Exception as err:  # a picture must not fail a finished run
        log.warning("could not draw the soft tree picture: %s", err)
    return written
