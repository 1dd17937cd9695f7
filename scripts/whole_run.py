"""The whole run a user waits for, not only the training step (``scripts/bench.py --whole-run``).

1. The default run (``kdexp``, teacher cached) as a fresh process, its wall time split into the
   phases the run records (``run.phases_s`` in results.json: start-up, data, teacher, training,
   evaluation, profiling, writing; kdexp.phases) plus what is left (interpreter exit, unaccounted).
   A warm-up run first makes sure the teacher, its test logits and the model timings are cached,
   as they are for every run after a user's first.
2. Two short runs (``method=vanilla student=cnn_small trainer.max_epochs=1``, seeds 0 and 1) one
   after the other, then both started together: the together case must not finish later.
3. The student-only step (method ``vanilla``, lean data path): the default run's student
   ``cnn_tiny`` on Fashion-MNIST (batch 128) and resnet20 on CIFAR-100-shaped data (batch 64, crop
   and flip), in kdexp's Lightning loop against a plain PyTorch loop over the same
   data loader and batch transform: the median step time of each, measured in alternation
   ``--step-reps`` times (this VM's speed drifts by 30% over minutes; alternating pairs cancel
   the drift), and the median of the per-pair ratios; also Lightning's own loop around the plain
   step (a bare LightningModule, nothing logged): the floor of any Lightning-based tool.

Every number is measured here; run it on an otherwise idle machine. ``--checkout DIR`` times
another checkout of kdexp (e.g. an older commit, for a before/after table; one without
``run.phases_s`` gives only its wall times).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAIR_JOB = ("method=vanilla", "student=cnn_small", "trainer.max_epochs=1")


def kdexp_command(*overrides: str) -> list[str]:
    """``kdexp`` of the checkout on PYTHONPATH, with this interpreter."""
    return [sys.executable, "-c", "from kdexp.train import main; main()", *overrides]


def start(checkout: Path, run_dir: Path, overrides: tuple[str, ...], cache_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(checkout), "KDEXP_CACHE_DIR": str(cache_dir)}
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")
    return subprocess.Popen(
        kdexp_command(*overrides, f"hydra.run.dir={run_dir}"),
        cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen, run_dir: Path) -> dict:
    if proc.wait() != 0:
        log = (run_dir.parent / f"{run_dir.name}.log").read_text()[-3000:]
        raise SystemExit(f"kdexp exited with {proc.returncode} in {run_dir}:\n{log}")
    return json.loads((run_dir / "results.json").read_text())


def timed(checkout: Path, run_dir: Path, overrides: tuple[str, ...], cache_dir: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    results = finish(start(checkout, run_dir, overrides, cache_dir), run_dir)
    return time.perf_counter() - started, results


def phase_table(wall: float, results: dict) -> list[tuple[str, float]]:
    spent = results["run"].get("phases_s") or {}
    rows = list(spent.items())
    rows.append(("other (exit, unaccounted)", max(0.0, wall - sum(spent.values()))))
    return rows


def whole_run(checkout: Path, cache_dir: Path, warmup: bool, work: Path) -> dict:
    out: dict = {"checkout": str(checkout), "cache_dir": str(cache_dir)}
    if warmup:
        wall, results = timed(checkout, work / "warmup", (), cache_dir)
        source = results["run"].get("teacher_source", {}).get("source", "?")
        print(f"warm-up run: {wall:6.1f} s (teacher: {source})", flush=True)
        out["warmup_s"] = round(wall, 1)
    wall, results = timed(checkout, work / "default", (), cache_dir)
    rows = phase_table(wall, results)
    out["default_run"] = {"wall_s": round(wall, 1), "phases_s": dict(rows),
                          "student_acc_top1": results["student"]["acc_top1"]}
    print(f"\ndefault run (`kdexp`, teacher cached): {wall:.1f} s, student test acc "
          f"{100 * results['student']['acc_top1']:.2f}%")
    if results["run"].get("phases_s"):
        print(f"  {'phase':<28}{'seconds':>9}{'share':>8}")
        for name, seconds in rows:
            print(f"  {name:<28}{seconds:9.1f}{100 * seconds / wall:7.1f}%")
        out["default_run"]["training_share"] = round(results["run"]["phases_s"].get("training", 0) / wall, 3)
        print(f"  training share {100 * out['default_run']['training_share']:.1f}% (target >= 70%)")

    if warmup:  # the pair job's model timings in the store, as for the default run
        timed(checkout, work / "warmup_pair", (*PAIR_JOB, "seed=0"), cache_dir)
    serial = [timed(checkout, work / f"serial{seed}", (*PAIR_JOB, f"seed={seed}"), cache_dir)[0] for seed in (0, 1)]
    started = time.perf_counter()
    procs = [(start(checkout, work / f"together{seed}", (*PAIR_JOB, f"seed={seed}"), cache_dir), seed) for seed in (0, 1)]
    together_runs = [finish(proc, work / f"together{seed}") for proc, seed in procs]
    together = time.perf_counter() - started
    threads = [r["run"].get("threads") for r in together_runs]
    out["two_runs"] = {"job": " ".join(PAIR_JOB), "one_s": [round(s, 1) for s in serial],
                       "one_after_the_other_s": round(sum(serial), 1), "together_s": round(together, 1),
                       "threads_together": threads}
    print(f"\ntwo runs of `kdexp {' '.join(PAIR_JOB)}` (seeds 0, 1):")
    print(f"  one after the other  {sum(serial):7.1f} s  ({serial[0]:.1f} + {serial[1]:.1f})")
    print(f"  started together     {together:7.1f} s  (threads at each run's start: {threads}; target <= one after the other)")
    return out


def student_step(reps: int, steps: int, model: str = "cnn_tiny", data: str = "fashion_mnist") -> dict:
    """Median step time of kdexp's vanilla step and of a plain loop, ``reps`` alternating pairs.
    ``data``: ``fashion_mnist`` (batch 128, the default run's) or ``cifar100`` (batch 64, random
    images in the CIFAR pickle layout, crop + flip: bench.py's setting)."""
    import logging
    import statistics
    import warnings

    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO))
    from kdexp.data import build_datamodule
    from kdexp.methods import build_method
    from kdexp.models import build_model
    from kdexp.runner.performance import apply_performance

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    sgd = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}
    tmp = tempfile.TemporaryDirectory(prefix="kdexp-step-")
    if data == "cifar100":
        from bench import BATCH, write_cifar100

        write_cifar100(Path(tmp.name), n_train=(steps + 1) * BATCH + 5000)
        cfg = {"name": "cifar100", "root": tmp.name, "download": False, "augment": True, "batch_size": BATCH,
               "val_size": 5000}
    else:
        cfg = {"name": "fashion_mnist", "batch_size": 128, "eval_batch_size": 1000, "val_size": 5000}
    datamodule = build_datamodule(cfg, lean=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    classes, shape = datamodule.num_classes, datamodule.input_shape
    skip = 5  # the first steps warm up allocators and caches

    class StepClock(pl.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_train_batch_start(self, *args) -> None:
            self.starts.append(time.perf_counter())

    def kdexp_steps() -> list[float]:
        torch.manual_seed(0)
        module = build_method({"name": "vanilla"}, build_model({"name": model}, classes, shape[0]), None, classes,
                              shape, sgd, {"name": "none"})
        apply_performance(module, datamodule, {"teacher_cache": "off"}, "vanilla", tmp.name)
        return lightning_steps(module, datamodule=datamodule)

    class Bare(pl.LightningModule):
        """Lightning's own loop around the plain step: no kdexp code, nothing logged."""

        def __init__(self) -> None:
            super().__init__()
            self.net = build_model({"name": model}, classes, shape[0]).module

        def training_step(self, batch, batch_idx):
            x, y, *_ = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

        def on_after_batch_transfer(self, batch, dataloader_idx):
            return datamodule.on_after_batch_transfer(batch, dataloader_idx)

    def lightning_steps(module: pl.LightningModule, **data) -> list[float]:
        """Step times of one epoch of ``steps + 1`` batches (``data``: the datamodule, or the loader)."""
        clock = StepClock()
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=steps + 1, limit_val_batches=0,
            num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[clock],
        )
        trainer.fit(module, **data)
        return [b - a for a, b in zip(clock.starts, clock.starts[1:])][skip:]

    def bare_steps() -> list[float]:
        torch.manual_seed(0)
        return lightning_steps(Bare(), train_dataloaders=datamodule.train_dataloader())

    def plain_steps() -> list[float]:
        torch.manual_seed(0)
        net = build_model({"name": model}, classes, shape[0]).module.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        batches, times = iter(datamodule.train_dataloader()), []
        for _ in range(steps):
            started = time.perf_counter()
            x, y, *_ = datamodule.on_after_batch_transfer(next(batches), 0)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - started)
        return times[skip:]

    pairs = []
    with tmp:
        for rep in range(reps):
            kdexp_ms = 1e3 * statistics.median(kdexp_steps())
            bare_ms = 1e3 * statistics.median(bare_steps())
            plain_ms = 1e3 * statistics.median(plain_steps())
            pairs.append((round(kdexp_ms, 3), round(bare_ms, 3), round(plain_ms, 3)))
            print(f"  {model:>9} {rep + 1}/{reps}: kdexp {kdexp_ms:7.2f}  bare Lightning {bare_ms:7.2f}  plain loop"
                  f" {plain_ms:7.2f} ms/step  kdexp/plain {kdexp_ms / plain_ms:.3f}", flush=True)
    ratio = statistics.median(k / p for k, _, p in pairs)
    bare = statistics.median(b / p for _, b, p in pairs)
    print(f"  {model}: median kdexp / plain loop {ratio:.3f} (target <= 1.05); bare Lightning / plain loop {bare:.3f}")
    return {"model": model, "data": data, "batch": cfg["batch_size"], "steps": steps,
            "kdexp_bare_plain_ms": pairs, "kdexp_over_plain": round(ratio, 3), "bare_lightning_over_plain": round(bare, 3)}


def main(args) -> None:
    checkout = Path(args.checkout or REPO).resolve()
    cache_dir = Path(args.cache_dir or checkout / ".cache" / "kdexp").resolve()
    with tempfile.TemporaryDirectory(prefix="kdexp-whole-run-") as tmp:
        out = whole_run(checkout, cache_dir, not args.no_warmup, Path(tmp))
    if args.step_reps:
        print(f"\nthe student-only step ({args.step_reps} alternating pairs of {args.step_steps} steps):")
        out["student_step"] = [
            student_step(args.step_reps, args.step_steps),  # the default run's student and data
            student_step(args.step_reps, args.step_steps // 4, "resnet20", "cifar100"),  # the models
        ]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
