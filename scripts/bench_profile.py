"""Print kdexp.profile numbers for a few reference models as a Rich table.

Models: torchvision resnet18 and mobilenet_v3_small at 3x224x224 (random weights, nothing is
downloaded) and the default run's teacher and student (cnn_large, cnn_tiny) at 1x28x28. Units: MB = 10^6 bytes, MACs per image, latency in ms at
batch 1 (median and IQR), throughput in images/s at ``--throughput-batch``.

    python scripts/bench_profile.py [--device cpu|cuda] [--threads N] [--min-run-time S]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

try:
    from kdexp.models import build_model
    from kdexp.profile import profile_model
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kdexp.models import build_model
    from kdexp.profile import profile_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--throughput-batch", type=int, default=64)
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per timing")
    args = parser.parse_args(argv)

    # (model config, classes, input shape): the default run's pair and two torchvision references.
    specs = [
        ({"source": "torchvision", "name": "resnet18"}, 1000, (3, 224, 224)),
        ({"source": "torchvision", "name": "mobilenet_v3_small"}, 1000, (3, 224, 224)),
        ({"name": "cnn_large"}, 10, (1, 28, 28)),
        ({"name": "cnn_tiny"}, 10, (1, 28, 28)),
    ]

    table = Table(title=f"kdexp.profile — torch {torch.__version__}")
    table.add_column("model")
    table.add_column("input")
    for col in ("params", "size MB", "MMACs", "latency b1 ms", "IQR ms", "images/s", "batch"):
        table.add_column(col, justify="right")
    table.add_column("device")
    table.add_column("threads", justify="right")

    for cfg, num_classes, shape in specs:
        name = cfg["name"]
        model = build_model(cfg, num_classes, shape[0]).module
        p = profile_model(
            model, shape, device=args.device, threads=args.threads,
            throughput_batch=args.throughput_batch, min_run_time=args.min_run_time,
        )
        table.add_row(
            name, "x".join(map(str, shape)), f"{p.params:,}", f"{p.size_mb:.2f}",
            f"{p.macs / 1e6:,.2f}", f"{p.latency_ms_b1:.3f}", f"{p.latency_iqr_ms_b1:.3f}",
            f"{p.throughput_ips:,.0f}", str(p.throughput_batch), p.device, str(p.threads),
        )
    console = Console()
    if not console.is_terminal:  # piped or captured: don't squeeze the table into 80 columns
        console = Console(width=160)
    console.print(table)
    console.print("MB = 10^6 bytes of torch.save(state_dict); MACs per image, conv/linear/matmul "
                    "only; latency = median (IQR) over Timer blocks.", style="dim")


if __name__ == "__main__":
    main()
