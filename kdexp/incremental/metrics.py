"""Class-incremental metrics from the accuracy matrix.

``matrix[i][j]`` is the accuracy after step i on the test images of step j's classes (j <= i;
None above the diagonal), predicting among every class seen so far (one head, no task labels).
``seen[i]`` is the accuracy after step i on the test images of all classes seen so far.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


def step_accuracies(predictions: Tensor, positions: Tensor, task_of_position: Tensor, tasks: int) -> tuple[list[float | None], float]:
    """(accuracy on each step's classes, None for steps not yet seen; accuracy on all) from
    predicted and true positions of one evaluation pass."""
    correct = (predictions == positions).double()
    task = task_of_position[positions]
    row: list[float | None] = []
    for j in range(tasks):
        mask = task == j
        row.append(float(correct[mask].mean()) if mask.any() else None)
    return row, float(correct.mean()) if len(correct) else float("nan")


def average_forgetting(matrix: list[list[float | None]]) -> float | None:
    """Chaudhry et al. (2018): after the last step T, f_j = max_{i<T} a[i][j] − a[T][j] for every
    earlier step j; the mean over j < T. None for a single step."""
    last = len(matrix) - 1
    if last < 1:
        return None
    drops = []
    for j in range(last):
        best = max(matrix[i][j] for i in range(j, last))
        drops.append(best - matrix[last][j])
    return sum(drops) / len(drops)


def summary(matrix: list[list[float | None]], seen: list[float]) -> dict[str, Any]:
    """The headline numbers: average incremental accuracy (Rebuffi et al.: the mean over steps of
    the accuracy on all classes seen so far), final accuracy, average forgetting (fractions)."""
    return {
        "accuracy_matrix": matrix,
        "accuracy_seen": seen,
        "average_incremental_accuracy": sum(seen) / len(seen),
        "final_accuracy": seen[-1],
        "average_forgetting": average_forgetting(matrix),
    }


def matrix_figure(matrix: list[list[float | None]], title: str):
    """The matrix as a heat map (rows: after step i; columns: step j's classes), in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.array([[np.nan if v is None else 100 * v for v in row] for row in matrix], dtype=float)
    n = len(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    for i in range(n):
        for j in range(i + 1):
            if not np.isnan(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] < 60 else "black")
    ax.set_xticks(range(n), [str(j + 1) for j in range(n)])
    ax.set_yticks(range(n), [str(i + 1) for i in range(n)])
    ax.set_xlabel("classes of step")
    ax.set_ylabel("after step")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig
