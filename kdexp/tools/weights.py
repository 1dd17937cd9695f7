"""Reading weights: torch files (tensors and plain containers only), the state_dict inside a
raw, Lightning, kdexp or RepDistiller checkpoint, and why a file cannot be read, in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

# Prefixes that wrappers put on parameter names: Lightning modules, DDP, RepDistiller.
_PREFIXES = ("student.", "module.", "model.")


def read_torch(path: str | Path, mmap: bool = False) -> Any:
    """A torch file's content on the CPU, tensors and plain containers only (no code runs);
    ``mmap``: the structure is read, the tensors only when used."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def extract_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The model weights inside a raw state_dict, a kdexp/Lightning or a RepDistiller checkpoint."""
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        raise ValueError("holds no state_dict (expected tensors under 'state_dict', 'model' or top level)")
    # A Lightning checkpoint of a distillation run also holds method modules (e.g. regressors).
    if any(k.startswith("student.") for k in checkpoint):
        checkpoint = {k: v for k, v in checkpoint.items() if k.startswith("student.")}
    for prefix in _PREFIXES:
        if checkpoint and all(k.startswith(prefix) for k in checkpoint):
            checkpoint = {k[len(prefix) :]: v for k, v in checkpoint.items()}
    return checkpoint


def unreadable_reason(path: Path, err: Exception) -> str:
    """Why ``torch.load`` failed, in words: not a torch file, truncated, or unsafe objects."""
    import pickle
    import re
    import zipfile

    with open(path, "rb") as handle:
        head = handle.read(2)
    if not head.startswith(b"PK") and head[:1] != b"\x80":  # neither a zip archive nor a pickle
        return "it is not a file written by torch.save"
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        return "the file is truncated or corrupt (an incomplete zip archive)"
    if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
        found = re.search(r"GLOBAL (\S+)", str(err))
        return (
            "it holds Python objects other than tensors and plain containers, which current torch "
            "refuses to unpickle" + (f" (e.g. {found.group(1)})" if found else "")
        )
    return f"the file is truncated or corrupt ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"


def load_weights(model: Any, path: str | Path, num_classes: int) -> None:
    """Load ``path`` into ``model``, failing with a clear message before any training starts."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"teacher.checkpoint={str(path)!r} is a folder; give the checkpoint file (.pt or .ckpt) inside it")
    if not path.is_file():
        raise FileNotFoundError(f"teacher.checkpoint={str(path)!r} does not exist")
    try:
        checkpoint = read_torch(path)
    except Exception as err:  # any unreadable file is reported in one sentence
        raise ValueError(
            f"teacher.checkpoint={str(path)!r} cannot be read as a checkpoint: {unreadable_reason(path, err)}; expected "
            "a torch.save file of a state_dict, a Lightning checkpoint (weights under 'state_dict') "
            "or a RepDistiller checkpoint (under 'model')"
        ) from None
    try:
        state = extract_state_dict(checkpoint)
    except ValueError as err:
        raise ValueError(f"teacher.checkpoint={str(path)!r} {err}") from None
    head = state.get(f"{model.classifier}.weight")
    if head is not None and head.shape[0] != num_classes:
        raise ValueError(
            f"teacher.checkpoint={str(path)!r} predicts {head.shape[0]} classes but the data has "
            f"{num_classes}; use a teacher trained on this dataset"
        )
    expected = model.module.state_dict()
    problems = {
        "missing keys": [k for k in expected if k not in state],
        "unexpected keys": [k for k in state if k not in expected],
        "shape mismatches": [
            k for k in expected if k in state and state[k].shape != expected[k].shape
        ],
    }
    if any(problems.values()):
        listed = "; ".join(
            f"{kind} {keys[:4]}{' ...' if len(keys) > 4 else ''}" for kind, keys in problems.items() if keys
        )
        raise ValueError(
            f"teacher.checkpoint={str(path)!r} does not fit teacher.name={model.name!r}: {listed}"
        )
    model.module.load_state_dict(state)


def load_state(path: Path, module: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """A state_dict from a ``.pt`` (kdexp's own, a teacher cache entry or a checkpoint), on the CPU.

    A file that already holds ``module``'s own keys is taken as it is: a quantised student's keys
    all start with ``model.``, a prefix that other checkpoints' wrappers add and that is stripped
    from them."""
    try:
        blob = read_torch(path)
    except Exception as err:  # truncated, foreign, unsafe pickle
        raise ValueError(f"{path} cannot be read as weights: {unreadable_reason(path, err)}") from None
    if module is not None and isinstance(blob, dict) and set(blob) == set(module.state_dict()):
        return blob
    return extract_state_dict(blob)


def load_student_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The student's weights from a kdexp ``.ckpt`` (its ``student.*`` entries) or a ``student.pt``;
    ValueError naming ``init_weights`` when the file holds neither."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"init_weights={str(path)!r} does not exist (or is not a file)")
    try:
        state = read_torch(path)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"init_weights={str(path)!r} cannot be read: {unreadable_reason(path, err)}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = {k[len("student."):]: v for k, v in state["state_dict"].items() if k.startswith("student.")}
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(
            f"init_weights={str(path)!r} holds no student weights (expected a kdexp checkpoints/*.ckpt "
            "or a run's student.pt)"
        )
    return state
