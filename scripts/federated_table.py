"""The measured table of docs/federated.md: fedavg, feddf, fedmd and fd on Fashion-MNIST, 10 clients,
Dirichlet α ∈ {0.1, 0.5}, 3 seeds each, beside the centralised student (one client holding every
non-public training image, the same rounds and local epochs: FedAvg with one client is plain SGD).

The whole training set (55,000 images: 5,000 of them the public set, 50,000 split over the clients),
20 rounds, cnn_tiny. Scaled to a 2-core CPU in the work per round, not in the data or the rounds:
0.2 local epochs (each client a fifth of its batches per round), FedDF 100 server steps a round,
FedMD a 1,000-image public subset a round; clients scored on 500 test images per round (all 10,000
in the last). Every run is a `kdexp federated=fashion_mnist_10 ...` sweep job; the table is built
from their results.json files.

    python scripts/federated_table.py [--out outputs/federated_table] [--seeds 0,1,2] [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kdexp.tools.files import write_atomic

SCALE = ["federated.local_epochs=0.2", "federated.client_eval_size=500", "logger=none"]
METHODS = {  # method → its own overrides at this scale (about as much server work a round as the clients' local work)
    "fedavg": [],
    "feddf": ["method.server_steps=100"],
    "fedmd": ["method.public_per_round=1000"],
    "fd": [],
}


def sweep(out: Path, name: str, overrides: list[str]) -> None:
    command = [sys.executable, "-m", "kdexp.train", "-m", "federated=fashion_mnist_10", *overrides,
               f"hydra.sweep.dir={out / name}"]
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
    print(f"  {time.perf_counter() - start:.0f} s", flush=True)


def rows(out: Path) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(out.glob("*/*/results.json"))]
    groups: dict[tuple, list[dict]] = {}
    for r in found:
        if r["run"].get("status") != "complete":
            continue
        fed = r["federated"]
        label = "centralised" if fed["clients"] == 1 else r["run"]["method"]
        groups.setdefault((label, fed["alpha"] if fed["clients"] > 1 else None), []).append(fed)
    table = []
    for (label, alpha), runs in sorted(groups.items(), key=lambda kv: (kv[0][1] or 0, kv[0][0])):
        accs = [100 * f["final_accuracy"] for f in runs]
        best = [100 * max(f["per_round"]["accuracy"]) for f in runs]
        table.append({
            "method": label, "alpha": alpha, "seeds": len(runs), "acc": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else float("nan"),
            "best": statistics.fmean(best), "best_std": statistics.stdev(best) if len(best) > 1 else float("nan"),
            "bytes": statistics.fmean(f["total_bytes"] for f in runs),
            "accuracy_of": runs[0]["accuracy_of"], "target": [f["rounds_to_target"] for f in runs],
        })
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| method | α | seeds | final accuracy (%) | best round (%) | total bytes (up + down) | accuracy of | rounds to 80% |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for row in table:
        alpha = "—" if row["alpha"] is None else f"{row['alpha']:g}"
        target = ", ".join("—" if t is None else str(t) for t in row["target"])
        lines.append(f"| {row['method']} | {alpha} | {row['seeds']} | {row['acc']:.2f} ± {row['std']:.2f} | {row['best']:.2f} ± {row['best_std']:.2f} | "
                     f"{row['bytes'] / 1e6:.2f} MB | {row['accuracy_of']} | {target} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/federated_table"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table from --out")
    parser.add_argument("--only", default="", help="run only these sweeps (comma-separated: centralised,fedavg,...)")
    args = parser.parse_args()
    common = [*SCALE, f"federated.rounds={args.rounds}", f"seed={args.seeds}"]
    wanted = set(args.only.split(",")) if args.only else {"centralised", *METHODS}
    if not args.table_only:
        if "centralised" in wanted:
            sweep(args.out, "centralised", [*common, "method=fedavg", "federated.clients=1", "federated.iid=true"])
        for method, own in METHODS.items():
            if method in wanted:
                sweep(args.out, method, [*common, f"method={method}", "federated.alpha=0.1,0.5", *own])
    text = markdown(rows(args.out))
    write_atomic(args.out / "table.md", text)
    print(text)


if __name__ == "__main__":
    main()
