"""Training-step speed of kdexp against a plain PyTorch loop, all measured in one run.

For each teacher→student pair on CIFAR-shaped data (3x32x32, 100 classes, batch 64, crop+flip):

  (a) student only   kdexp, method vanilla (no teacher)
  (b) KD online      kdexp, method kd, teacher forward every step (performance.teacher_cache=off)
  (c) KD cached      kdexp, method kd, every teacher output served from the cache
  (d) plain loop     a minimal hand-written PyTorch KD loop: same models, data and augmentation
  (e) plain student  the same loop without the teacher: the student alone, what (a) does

The kdexp variants run ``pytorch_lightning.Trainer.fit`` on the real data path: a synthetic CIFAR
folder (pickle format) read by ``kdexp.data.cifar``, lean tensors, batch crop/flip on the device.
Each runs two epochs of ``--steps`` steps with a fixed batch order and the crop/flip draws
seeded per batch, so epoch 2 replays epoch 1's views: epoch 1 warms up (and fills
the cache for (c)), epoch 2 is timed (wall clock, all of it: loading, augmentation, forward,
backward, optimizer, logging). (d) times ``--steps`` steps after ``--warmup`` steps.

Targets: (c) within 1.1x of (a)'s step time and (b) within 1.1x of (d) (issue 7); (a) within
1.05x of (e) (issue 20).

    python scripts/bench.py                        # CPU, and CUDA when present
    python scripts/bench.py --steps 50 --devices cuda --precision bf16-mixed --channels-last
    python scripts/bench.py --pairs resnet56:resnet20 --steps 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# This checkout's kdexp first (an installed kdexp may be another checkout's).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytorch_lightning as pl

from kdexp.data.cifar import STATS, CIFAR100DataModule
from kdexp.data.tensor import crop_flip
from kdexp.methods import build_method
from kdexp.models import build_model
from kdexp.runner.performance import apply_performance

BATCH = 64
CLASSES = 100
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}
NO_SCHED = {"name": "none"}
KD = {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}


def write_cifar100(root: Path, n_train: int, n_test: int = BATCH) -> None:
    """Random images in the CIFAR-100 python-pickle layout (what kdexp.data.cifar reads)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        entry = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": rng.integers(0, CLASSES, n).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)


class FixedOrderCIFAR(CIFAR100DataModule):
    """kdexp's CIFAR-100 module with an unshuffled training order and crop/flip draws seeded by
    the batch's first sample, so that epoch 2 replays epoch 1's views exactly."""

    def train_dataloader(self):
        return self._loader(self.train_set, False, self.batch_size)

    def augment_batch(self, batch):
        torch.manual_seed(int(batch.index[0]))
        if batch.images.is_cuda:
            torch.cuda.manual_seed(int(batch.index[0]))
        return super().augment_batch(batch)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer(pl.Callback):
    """Records each training epoch's wall time."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times = device, []

    def on_train_epoch_start(self, trainer, module) -> None:
        sync(self.device)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        sync(self.device)
        self.times.append(time.perf_counter() - self._start)


def build_pair(teacher: str, student: str):
    torch.manual_seed(0)
    t = build_model({"name": teacher}, CLASSES, 3)
    t.module.eval().requires_grad_(False)
    s = build_model({"name": student}, CLASSES, 3)
    return t, s


def kdexp_step_time(variant: str, pair, root: Path, args, device: torch.device) -> tuple[float, dict]:
    """Seconds per step of the timed epoch of kdexp variant a / b / c."""
    t, s = build_pair(*pair)
    dm = FixedOrderCIFAR(
        root=str(root), download=False, augment=True, lean=True, batch_size=BATCH,
        channels_last=args.channels_last,
    )
    dm.setup("fit")
    method = {"name": "vanilla"} if variant == "a" else KD
    module = build_method(method, s, None if variant == "a" else t, CLASSES, (3, 32, 32), SGD, NO_SCHED)
    perf = {
        "teacher_cache": "on" if variant == "c" else "off",
        "channels_last": args.channels_last,
        "compile": args.compile,
    }
    apply_performance(module, dm, perf, method["name"], root / "run")
    timer = EpochTimer(device)
    trainer = pl.Trainer(
        accelerator=device.type, devices=1, max_epochs=2, precision=args.precision,
        limit_train_batches=args.steps, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer],
    )
    trainer.fit(module, dm)
    extra = {}
    if variant == "c":
        extra = module.teacher_outputs.summary()
        # Epoch 2 replayed epoch 1's views: every one of its lookups must have been a hit.
        assert module.teacher_outputs.hits >= args.steps * BATCH, extra
    return timer.times[-1] / args.steps, extra


def plain_step_time(pair, root: Path, args, device: torch.device, teacher_too: bool = True) -> float:
    """(d): a hand-written KD loop on the same models, data and augmentation; (e) without the
    teacher: the student alone on cross-entropy (what (a) does)."""
    t, s = build_pair(*pair)
    teacher, student = t.module.to(device), s.module.to(device).train()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    teacher.to(memory_format=fmt)
    student.to(memory_format=fmt)
    if args.compile:
        student.compile()
    images = torch.from_numpy(np.asarray(pickle.load(open(root / "cifar-100-python" / "train", "rb"))["data"]))
    images = images.view(-1, 3, 32, 32).to(device)
    labels = torch.randint(0, CLASSES, (len(images),), device=device)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in STATS["cifar100"])
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    T = 4.0

    def step(i: int) -> None:
        j = (i % args.steps) * BATCH
        xb, yb = images[j : j + BATCH], labels[j : j + BATCH]
        dy, dx, flip = (torch.randint(0, n, (BATCH,), device=device) for n in (9, 9, 2))
        x = ((crop_flip(xb, dy, dx, flip, 4).float() / 255 - mean) / std).contiguous(memory_format=fmt)
        with autocast:
            s_logits = student(x).float()
            if not teacher_too:
                loss = F.cross_entropy(s_logits, yb)
            else:
                with torch.no_grad():
                    t_logits = teacher(x).float()
                kd = F.kl_div(F.log_softmax(s_logits / T, 1), F.log_softmax(t_logits / T, 1),
                              reduction="batchmean", log_target=True) * T * T
                loss = 0.1 * F.cross_entropy(s_logits, yb) + 0.9 * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    sync(device)
    return (time.perf_counter() - start) / args.steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="resnet32x4:resnet8x4,resnet56:resnet20",
                        help="comma-separated teacher:student registry names")
    parser.add_argument("--devices", default="auto", help="auto (cpu, and cuda if present) | cpu | cuda")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (one epoch) per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of the plain loop")
    parser.add_argument("--precision", default="32-true", help="32-true | bf16-mixed (Lightning names)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the student")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    whole = parser.add_argument_group("whole run (scripts/whole_run.py)")
    whole.add_argument("--whole-run", action="store_true",
                       help="time the default run phase by phase, and two runs at once vs one after the other")
    whole.add_argument("--checkout", default=None, help="the kdexp checkout to time (default: this one)")
    whole.add_argument("--cache-dir", default=None, help="its teacher cache (default: CHECKOUT/.cache/kdexp)")
    whole.add_argument("--no-warmup", action="store_true", help="the teacher and timings are cached already")
    whole.add_argument("--step-reps", type=int, default=8, help="alternating kdexp/plain pairs of the student step (0: skip)")
    whole.add_argument("--step-steps", type=int, default=100, help="steps per measurement of the student step")
    args = parser.parse_args(argv)
    if args.whole_run:
        import whole_run

        whole_run.main(args)
        return

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.devices == "auto" else args.devices.split(",")
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",")]

    machine = {
        "torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor()
        or platform.machine(), "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "precision": args.precision, "channels_last": args.channels_last, "compile": args.compile,
        "batch": BATCH, "steps": args.steps,
    }
    print("machine:", json.dumps(machine))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cifar100(root, n_train=args.steps * BATCH)
        for dev in devices:
            device = torch.device(dev)
            for pair in pairs:
                times, cache = {}, {}
                for variant in "abc":
                    times[variant], extra = kdexp_step_time(variant, pair, root, args, device)
                    cache.update(extra)
                times["d"] = plain_step_time(pair, root, args, device)
                times["e"] = plain_step_time(pair, root, args, device, teacher_too=False)
                row = {
                    "device": dev, "teacher": pair[0], "student": pair[1],
                    **{f"{k}_ms": round(v * 1e3, 2) for k, v in times.items()},
                    **{f"{k}_ips": round(BATCH / v, 1) for k, v in times.items()},
                    "c_over_a": round(times["c"] / times["a"], 3),
                    "b_over_d": round(times["b"] / times["d"], 3),
                    "b_over_a": round(times["b"] / times["a"], 3),
                    "a_over_e": round(times["a"] / times["e"], 3),
                }
                rows.append(row)
                print(
                    f"{dev:4} {pair[0]:>10}->{pair[1]:<9} images/s: (a) student {row['a_ips']:8.1f}"
                    f"  (b) KD online {row['b_ips']:8.1f}  (c) KD cached {row['c_ips']:8.1f}"
                    f"  (d) plain KD loop {row['d_ips']:8.1f}  (e) plain student loop {row['e_ips']:8.1f}"
                    f"  |  c/a {row['c_over_a']:.3f} (target <= 1.1)  b/d {row['b_over_d']:.3f} (target <= 1.1)"
                    f"  a/e {row['a_over_e']:.3f} (target <= 1.05)",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
