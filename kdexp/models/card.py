"""Model cards: ``<role>.json`` beside each saved model, what rebuilds it without the run's config
(source, name, options, classes, input shape, normalisation, dtype, quantisation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from kdexp.models import BuiltModel

CARD_FORMAT = "kdexp.model/1"


def model_card(
    role: str, info: BuiltModel, num_classes: int, input_shape: tuple[int, ...], weights: str | None, **extra: Any
) -> dict[str, Any]:
    """What rebuilds ``info`` without the run's config: source, name, options, classes, input."""
    from kdexp.models import model_source  # this package imports every module of it first

    cfg = dict(info.cfg or {"name": info.name})
    param = next(info.module.parameters(), None)
    return {
        "format": CARD_FORMAT,
        "role": role,
        "name": info.name,
        "source": model_source(cfg),  # python: config._target_ is imported again to rebuild it
        "config": cfg,
        "num_classes": int(num_classes),
        "input_shape": [int(v) for v in input_shape],
        "dtype": str(param.dtype).removeprefix("torch.") if param is not None else "float32",
        "quantization": quantization_of(info.module),
        "weights": weights,
        **extra,
    }


def quantization_of(module: nn.Module) -> dict[str, Any] | None:
    """What a low-precision model's card says of its quantisation (None: a float model): the
    scheme and bit-widths a quantised student declares (``quantization_card``, kdexp.quantize)."""
    describe = getattr(module, "quantization_card", None)
    return describe() if callable(describe) else None


def read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} cannot be read as a kdexp model card: {err}") from None
    missing = {"config", "num_classes", "input_shape"} - set(card)
    if missing:
        raise ValueError(f"{path} is not a kdexp model card (no {sorted(missing)})")
    return card


def build_from_card(card: dict[str, Any]) -> BuiltModel:
    """The architecture a card describes, without pretrained weights (the saved weights follow)."""
    from kdexp.models import build_model  # this package imports every module of it first

    cfg = {**card["config"], "weights": None, "pretrained": False}
    return build_model(cfg, int(card["num_classes"]), int(card["input_shape"][0]), tuple(card["input_shape"]))
