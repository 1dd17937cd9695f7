"""Exact reuse of a frozen teacher's logits, keyed by the view of the sample the student sees.

A KD step pays for a teacher forward pass; with a frozen, eval-mode teacher that pass is a pure
function of the input image. The lean data path (``kdexp.data.tensor``) tells the module which
view each training image is — ``views[i] = [index, dy, dx, flip]`` — so the logits computed for a
view can be stored and served the next time exactly that view comes round:

* no augmentation (the default Fashion-MNIST run): one view per sample, so every epoch after the
  first is served from the cache;
* crop + flip (CIFAR: 9 × 9 offsets × 2 flips = 162 views per image): the cache fills lazily;
  views not seen before are computed online (the teacher runs on those images only) and stored.

Exactness contract:

* Keys: a view is only ever served the logits stored under its own key
  ``((index · P + dy) · P + dx) · F + flip``. As a guard against a data path that mislabels its
  views, the cache also stores two fixed random projections of each view's input image and
  checks them on every hit (``verify``); a mismatch raises instead of training on wrong targets.
* Values: with ``dtype=float32`` the stored logits are bit-for-bit the teacher's output for that
  view (returned in the dtype the teacher produced, e.g. bfloat16 under ``bf16-mixed``), so the
  KD loss on cached logits equals the loss on the online logits of the same forward. A forward of
  the same view in a *different batch* may differ from it in the last bits where kernels depend on
  the batch shape — the same size of difference as switching batch size or kernel algorithm.
  ``float16``/``bfloat16`` storage halves the memory but rounds the stored logits (not exact).

Storage: ``memory`` (a table on the training device, pages touched as it fills) or ``disk`` (a
file-backed table, for tables larger than memory); ``auto`` picks disk above a size limit.

Kept with the teacher: with one view per sample (no augmentation) a memory table is small (60,000
× 10 float32 = 2.4 MB for Fashion-MNIST), and the next run with the same teacher, data, device and
precision starts from it (``store_path``, kdexp.runner.build.store_teacher_train_logits): its first
epoch needs no teacher forward either. Its key holds the training data's content
(kdexp.teacher.test_logits.data_fingerprint) and the file records that key (a swapped file is not loaded).
The fingerprints travel with the logits, so a served view is still checked against the image the
run sees; a kept row that fails the check is dropped with the rest of the kept table and computed again.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from kdexp.data.tensor import ViewGrid
from kdexp.teacher.store import Store

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MODES = ("auto", "on", "off")
STORAGES = ("auto", "memory", "disk")



def training_logits_store(path: Path) -> Store:
    """The store of the teacher's training logits (``<cache>/teacher_train_logits/<key>.pt``)."""
    return Store(path.parent, "training logits of the teacher")


class TeacherOutputCache:
    """Teacher logits per (sample, crop offset, flip), filled lazily, served exactly."""

    def __init__(
        self,
        grid: ViewGrid,
        num_classes: int,
        dtype: torch.dtype = torch.float32,
        storage: str = "memory",
        path: str | Path | None = None,
        verify: bool = True,
    ) -> None:
        if storage not in ("memory", "disk"):
            raise ValueError(f"storage must be 'memory' or 'disk', got {storage!r}")
        if storage == "disk" and path is None:
            raise ValueError("a disk-backed teacher-output cache needs a file path")
        self.grid, self.num_classes, self.dtype = grid, num_classes, dtype
        self.storage, self.path, self.verify = storage, Path(path) if path else None, verify
        self.rows = grid.num_samples * grid.views_per_sample
        self.table: Tensor | None = None  # (rows, num_classes), allocated on first use
        self.filled: Tensor | None = None  # (rows,) bool
        self.fingerprints: Tensor | None = None  # (rows, 2) float32
        self._projection: Tensor | None = None  # (C·H·W, 2) float32, fixed
        self.out_dtype: torch.dtype | None = None  # what the teacher returns (restored on hits)
        self.hits = self.misses = 0
        self.store_path: Path | None = None  # where the table is kept with its teacher (load_store)
        self.stored_rows = 0  # rows filled when loaded: save_store writes only when it grew
        self.kept: Tensor | None = None  # (rows,) bool: the rows loaded from the store (load_store)

    def renewed(self) -> TeacherOutputCache:
        """An empty table with the same settings, for a teacher that changed (RCO's next anchor)."""
        return TeacherOutputCache(self.grid, self.num_classes, self.dtype, self.storage, self.path, self.verify)

    @property
    def nbytes(self) -> int:
        """Bytes of the logits table when full."""
        return self.rows * self.num_classes * torch.empty((), dtype=self.dtype).element_size()

    # --- keys --------------------------------------------------------------------------------
    def keys(self, views: Tensor) -> Tensor:
        """Row of each view: ``((index · P + dy) · P + dx) · F + flip``; out-of-range views raise."""
        if views.ndim != 2 or views.shape[1] != 4:
            raise ValueError(f"views must be (B, 4) [index, dy, dx, flip], got {tuple(views.shape)}")
        index, dy, dx, flip = views.long().unbind(1)
        g = self.grid
        bad = (
            (index < 0) | (index >= g.num_samples) | (dy < 0) | (dy >= g.positions)
            | (dx < 0) | (dx >= g.positions) | (flip < 0) | (flip >= g.flips)
        )
        if bool(bad.any()):
            raise ValueError(
                f"views outside the cache's grid {tuple(g)}: {views[bad][:4].tolist()} — the data "
                "module and the cache disagree about the views; set performance.teacher_cache=off"
            )
        return ((index * g.positions + dy) * g.positions + dx) * g.flips + flip

    def fingerprint(self, x: Tensor) -> Tensor:
        """Two fixed random projections of each image, (B, 2) float32: a view's identity check."""
        flat = x.detach().reshape(x.shape[0], -1).float()
        if self._projection is None or self._projection.shape[0] != flat.shape[1]:
            gen = torch.Generator().manual_seed(20150309)
            proj = torch.randn(flat.shape[1], 2, generator=gen) / math.sqrt(flat.shape[1])
            self._projection = proj
        if self._projection.device != flat.device:
            self._projection = self._projection.to(flat.device)
        with torch.autocast(device_type=flat.device.type, enabled=False):
            return flat @ self._projection

    # --- storage -----------------------------------------------------------------------------
    def _allocate(self, device: torch.device) -> None:
        if self.storage == "disk":
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self.path.unlink()  # a fresh table: a stale file's rows are never trusted
            size = self.rows * self.num_classes
            self.table = torch.from_file(str(self.path), shared=True, size=size, dtype=self.dtype)
            self.table = self.table.view(self.rows, self.num_classes)
            table_device = torch.device("cpu")
        else:
            # empty(): pages are only touched (and counted) as rows fill; `filled` guards reads.
            self.table = torch.empty(self.rows, self.num_classes, dtype=self.dtype, device=device)
            table_device = device
        self.filled = torch.zeros(self.rows, dtype=torch.bool, device=table_device)
        self.fingerprints = torch.zeros(self.rows, 2, dtype=torch.float32, device=table_device)

    def load_store(self, path: Path) -> int:
        """Start from the table kept at ``path`` (a memory table; missing, unreadable or stored under
        another key: empty); later saves go there. Returns the rows it held."""
        self.store_path = path
        if self.storage != "memory":
            return 0
        kept = training_logits_store(path).get(path)
        if kept is None:
            return 0
        table, filled, fingerprints = kept.get("table"), kept.get("filled"), kept.get("fingerprints")
        if not all(isinstance(t, Tensor) for t in (table, filled, fingerprints)):
            return 0
        if table.shape != (self.rows, self.num_classes) or table.dtype != self.dtype or filled.shape != (self.rows,):
            return 0
        self.table, self.filled, self.fingerprints = table, filled, fingerprints
        self.kept = filled.clone()
        self.out_dtype = getattr(torch, str(kept.get("out_dtype", "float32")))
        self.stored_rows = int(filled.sum())
        return self.stored_rows

    def save_store(self) -> bool:
        """Write the table to ``store_path`` when this run filled rows it did not load (atomic)."""
        if self.store_path is None or self.filled is None or self.storage != "memory":
            return False
        if int(self.filled.sum()) <= self.stored_rows:
            return False
        training_logits_store(self.store_path).save(self.store_path, {
            "table": self.table.cpu(), "filled": self.filled.cpu(), "fingerprints": self.fingerprints.cpu(),
            "out_dtype": str(self.out_dtype or self.dtype).replace("torch.", ""),
        })
        self.stored_rows = int(self.filled.sum())
        log.info("Kept the teacher's training logits for later runs: %s", self.store_path)
        return True

    def _to_table(self, t: Tensor) -> Tensor:
        return t.to(self.filled.device) if t.device != self.filled.device else t

    def release(self) -> None:
        """Free the table (and delete its file, for disk storage)."""
        self.table = self.filled = self.fingerprints = self.kept = None
        if self.storage == "disk" and self.path is not None and self.path.exists():
            self.path.unlink()

    # --- lookup ------------------------------------------------------------------------------
    def logits(self, x: Tensor, views: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
        """The teacher's logits for images ``x`` of views ``views``: stored ones where this exact
        view was computed before, ``compute(x[misses])`` (then stored) for the rest."""
        if self.table is None:
            self._allocate(x.device)
        elif self.storage == "memory" and self.table.device != x.device:  # a kept table, loaded on the CPU
            self.table, self.filled, self.fingerprints = (t.to(x.device) for t in (self.table, self.filled, self.fingerprints))
            self.kept = self.kept.to(x.device) if self.kept is not None else None
        flat = self.keys(views)
        rows = self._to_table(flat)
        fp = self.fingerprint(x) if self.verify else None
        if fp is not None:
            self._check(rows, fp)
        filled = self.filled[rows]
        hit = torch.nonzero(filled).squeeze(1)
        n_hit = hit.numel()
        self.hits += n_hit
        self.misses += len(flat) - n_hit
        if n_hit == len(flat):  # every view cached
            return self.table[rows].to(device=x.device, dtype=self.out_dtype)
        if n_hit == 0:  # nothing cached: exactly the online forward of the whole batch
            out = compute(x)
            self._store(rows, out, fp)
            return out
        miss = torch.nonzero(~filled).squeeze(1)
        miss_x = miss.to(x.device)
        computed = compute(x[miss_x])
        self._store(rows[miss], computed, fp[miss_x] if fp is not None else None)
        out = torch.empty(len(flat), self.num_classes, dtype=computed.dtype, device=x.device)
        out[miss_x] = computed
        out[hit.to(x.device)] = self.table[rows[hit]].to(device=x.device, dtype=computed.dtype)
        return out

    def _check(self, rows: Tensor, fp: Tensor) -> None:
        """Every filled row of ``rows`` must hold the fingerprint of its image in this batch. A
        mismatch on rows kept from an earlier run is the store's fault: every kept row is dropped
        (computed again, with a warning); on rows this run filled, it is the data path's."""
        filled = self.filled[rows]
        if not bool(filled.any()):
            return
        hit = torch.nonzero(filled).squeeze(1)
        current = self._to_table(fp[hit.to(fp.device)])
        wrong = ~torch.isclose(self.fingerprints[rows[hit]], current, rtol=1e-3, atol=1e-3).all(1)
        if not bool(wrong.any()):
            return
        if self.kept is not None and bool(self.kept[rows[hit[wrong]]].all()):
            log.warning(
                "Teacher-output cache: the training logits kept at %s do not match this run's images: "
                "not served; the teacher computes them again", self.store_path,
            )
            self.filled &= ~self.kept
            self.kept, self.stored_rows = None, 0
            return
        raise RuntimeError(
            "teacher-output cache: the images of this batch do not match the views they "
            "are keyed by (a data-path bug); refusing to serve another view's logits. "
            "Run with performance.teacher_cache=off and report the data module."
        )

    def _store(self, rows: Tensor, logits: Tensor, fp: Tensor | None) -> None:
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"teacher gives {logits.shape[-1]} logits; the cache holds {self.num_classes}")
        self.out_dtype = logits.dtype
        self.table[rows] = self._to_table(logits.detach()).to(self.dtype)
        if fp is not None:
            self.fingerprints[rows] = self._to_table(fp)
        self.filled[rows] = True

    def summary(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "views_per_sample": self.grid.views_per_sample,
            "dtype": str(self.dtype).replace("torch.", ""),
            "storage": self.storage,
            "table_mb": round(self.nbytes / 1e6, 1),
            "lookups": total,
            "hit_rate": round(self.hits / total, 4) if total else 0.0,
            **({"kept_views_loaded": self.stored_rows} if self.store_path is not None else {}),  # from earlier runs
        }


def cache_mode(options: dict[str, Any]) -> str:
    """``performance.teacher_cache`` as one of auto | on | off (YAML booleans accepted)."""
    mode = options.get("teacher_cache", "auto")
    if isinstance(mode, bool):  # YAML 1.1 reads a bare on/off as a boolean
        mode = "on" if mode else "off"
    mode = str(mode).lower()
    if mode not in MODES:
        raise ValueError(f"performance.teacher_cache={mode!r} is not one of {', '.join(MODES)}")
    return mode


def resolve_cache(
    options: dict[str, Any],
    method_name: str,
    method_exact: bool,
    teacher: torch.nn.Module | None,
    grid: ViewGrid | None,
    data_name: str,
) -> bool:
    """Whether the cache is on: ``auto`` = wherever it is exact; ``on`` fails loudly where not.

    ``teacher`` None means "no teacher (yet)": the checks that need one are skipped, and the
    answer is False (nothing to cache).
    """
    mode = cache_mode(options)
    if mode == "off":
        return False
    reasons = []
    if not method_exact:
        reasons.append(
            f"method {method_name!r} uses the teacher's features or trains alongside it, so its "
            "teacher must run online every step"
        )
    if teacher is not None and any(p.requires_grad for p in teacher.parameters()):
        reasons.append("the teacher is not frozen")
    if grid is None:
        reasons.append(
            f"data {data_name!r} does not name the view of each training image (the lean tensor "
            "data path does: fashion_mnist, cifar10, cifar100 with performance.lean_data=true)"
        )
    if reasons and mode == "on":
        raise ValueError(
            "performance.teacher_cache=on cannot be exact here: " + "; ".join(reasons)
            + ". Use performance.teacher_cache=auto (on only where exact) or off."
        )
    return teacher is not None and not reasons


def build_cache(
    options: dict[str, Any], grid: ViewGrid, num_classes: int, run_dir: str | Path, rank: int = 0
) -> TeacherOutputCache:
    """A cache for ``grid`` with ``performance.teacher_cache_{dtype,storage,…}`` options."""
    dtype_name = str(options.get("teacher_cache_dtype", "float32"))
    if dtype_name not in DTYPES:
        raise ValueError(
            f"performance.teacher_cache_dtype={dtype_name!r} is not one of {', '.join(DTYPES)}"
        )
    storage = str(options.get("teacher_cache_storage", "auto"))
    if storage not in STORAGES:
        raise ValueError(
            f"performance.teacher_cache_storage={storage!r} is not one of {', '.join(STORAGES)}"
        )
    path = Path(options.get("teacher_cache_dir") or Path(run_dir) / "teacher_outputs")
    cache = TeacherOutputCache(
        grid,
        num_classes,
        dtype=DTYPES[dtype_name],
        storage="memory",
        path=path / f"logits-rank{rank}-pid{os.getpid()}.bin",
        verify=bool(options.get("teacher_cache_verify", True)),
    )
    limit = float(options.get("teacher_cache_memory_limit_gb", 4.0)) * 1e9
    if storage == "disk" or (storage == "auto" and cache.nbytes > limit):
        cache.storage = "disk"
    return cache


def attach_output_cache(module: Any, datamodule: Any, perf: dict[str, Any], method_name: str, run_dir: str | Path) -> None:
    """The teacher-output cache on ``module`` where ``performance.teacher_cache`` and exactness allow."""
    grid = getattr(datamodule, "view_grid", None)
    on = resolve_cache(perf, method_name, type(module).teacher_use.logits_only, module.teacher, grid, datamodule.name)
    if on:
        module.teacher_outputs = build_cache(perf, grid, datamodule.num_classes, run_dir)
        cache = module.teacher_outputs
        log.info(
            "Teacher-output cache on: %d samples x %d views, %s, %s (%.1f MB when full)",
            grid.num_samples, grid.views_per_sample, str(cache.dtype).replace("torch.", ""),
            cache.storage, cache.nbytes / 1e6,
        )


def finish_cache(module) -> dict[str, Any] | None:
    """After fit: the cache's summary for results.json; its table is freed (and its file deleted)."""
    cache = getattr(module, "teacher_outputs", None)
    if cache is None:
        return None
    summary = cache.summary()
    trainer = module._trainer
    if trainer is None or (trainer.world_size == 1 and not trainer.received_sigterm):  # one rank saw every sample
        cache.save_store()
    cache.release()
    return summary
