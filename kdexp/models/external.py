"""torchvision and timm classifiers by name, adapted to the data's channels and classes."""

from __future__ import annotations

import re

from torch import nn

# Feature stages of common torchvision families (module paths), shallow → deep.
_TORCHVISION_STAGES: list[tuple[str, list[str]]] = [
    (r"^(resnet|resnext|wide_resnet)", ["layer1", "layer2", "layer3", "layer4"]),
    (r"^regnet", ["trunk_output.block1", "trunk_output.block2", "trunk_output.block3", "trunk_output.block4"]),
    (r"^shufflenet_v2", ["stage2", "stage3", "stage4"]),
    (r"^densenet", ["features.denseblock1", "features.denseblock2", "features.denseblock3", "features.denseblock4"]),
    (r"^convnext", ["features.1", "features.3", "features.5", "features.7"]),
    (r"^mobilenet_v2", ["features.3", "features.6", "features.13", "features.18"]),
]


def last_linear_path(model: nn.Module) -> str:
    """Module path of the model's last nn.Linear (its classifier)."""
    paths = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not paths:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier")
    return paths[-1]


def replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first Conv2d for one with ``in_channels`` inputs (same kernel, stride, padding)."""
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            if conv.in_channels == in_channels:
                return
            new = nn.Conv2d(
                in_channels,
                conv.out_channels,
                conv.kernel_size,
                conv.stride,
                conv.padding,
                conv.dilation,
                conv.groups if conv.groups == 1 else in_channels,
                conv.bias is not None,
            )
            parent_path, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_path) if parent_path else model, attr, new)
            return


def torchvision_stages(name: str) -> tuple[str, ...]:
    for pattern, stages in _TORCHVISION_STAGES:
        if re.match(pattern, name):
            return tuple(stages)
    return ()


def create_torchvision_model(
    name: str, num_classes: int, in_channels: int = 3, weights: str | None = None
) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ValueError(
            f"torchvision has no classification model {name!r}; available: {', '.join(available)}"
        )
    if weights is None:
        model = torchvision.models.get_model(name, num_classes=num_classes)
    else:  # pretrained weights keep their head shape; the classifier is replaced below
        model = _with_weights(lambda: torchvision.models.get_model(name, weights=weights), f"weights={weights!r}")
        head_path = last_linear_path(model)
        head = model.get_submodule(head_path)
        if head.out_features != num_classes:
            parent, _, attr = head_path.rpartition(".")
            new_head = nn.Linear(head.in_features, num_classes)
            setattr(model.get_submodule(parent) if parent else model, attr, new_head)
    replace_first_conv(model, in_channels)
    return model


def create_timm_model(
    name: str, num_classes: int, in_channels: int = 3, pretrained: bool = False
) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ImportError("teacher/student source 'timm' needs `pip install kdexp[timm]`") from None
    make = lambda: timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels)  # noqa: E731
    return _with_weights(make, "pretrained=true") if pretrained else make()


def _with_weights(make, what: str) -> nn.Module:
    """Build a model whose pretrained weights may have to be downloaded; without a connection (or
    with a broken download) say which key asked for them and what to do instead."""
    import urllib.error

    try:
        return make()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
        raise ValueError(
            f"{what}: the pretrained weights could not be downloaded or read ({type(err).__name__}: {err}). "
            "Without internet, put the weights file in torch's hub cache ($TORCH_HOME/hub/checkpoints, "
            "~/.cache/torch by default) on a machine that has them, give a checkpoint "
            "(teacher.checkpoint=PATH), or drop the pretrained weights"
        ) from None


def timm_stages(model: nn.Module) -> tuple[str, ...]:
    info = getattr(model, "feature_info", None) or []
    return tuple(f["module"] for f in info if f.get("module"))
