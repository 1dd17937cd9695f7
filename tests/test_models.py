"""Registry, small models, torchvision adaptation and feature hooks (CIFAR models: test_cifar_models)."""

import pytest
import torch
from torch import nn

from kdexp.features import FeatureHooks
from kdexp.models import available_models, build_model


@pytest.mark.parametrize(
    ("name", "params"),  # 3x3 convs without bias + BN + a linear head, for 10 classes
    [("cnn_tiny", 6274), ("cnn_small", 24058), ("cnn_medium", 94186), ("cnn_large", 288170)],
)
def test_small_cnns(name: str, params: int) -> None:
    built = build_model({"name": name}, 10, 1)
    assert sum(p.numel() for p in built.module.parameters()) == params
    assert built.module(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    hooks = FeatureHooks(built.module, built.stages)
    built.module(torch.randn(2, 1, 28, 28))
    assert [f.shape[-1] for f in hooks.ordered()] == [28, 14, 7]


def test_unknown_model_lists_registered_names() -> None:
    with pytest.raises(ValueError, match="is unknown; choose one of: .*resnet32x4"):
        build_model({"name": "resnet1000"}, 10, 3)


def test_unknown_source() -> None:
    with pytest.raises(ValueError, match="kdexp, torchvision, timm"):
        build_model({"source": "keras", "name": "x"}, 10, 3)


def test_torchvision_model_adapts_to_channels_and_classes() -> None:
    built = build_model({"source": "torchvision", "name": "resnet18"}, 7, 1)
    assert built.module(torch.randn(2, 1, 64, 64)).shape == (2, 7)
    assert built.stages == ("layer1", "layer2", "layer3", "layer4") and built.classifier == "fc"
    assert built.module.conv1.in_channels == 1


def test_torchvision_unknown_name_lists_models() -> None:
    with pytest.raises(ValueError, match="torchvision has no classification model 'resnet7'.*resnet18"):
        build_model({"source": "torchvision", "name": "resnet7"}, 10, 3)


def test_feature_hooks_name_available_paths_on_a_typo() -> None:
    model = build_model({"name": "cnn_tiny"}, 10, 1).module
    with pytest.raises(ValueError, match=r"no module path\(s\) \['block.9'\].*blocks.0"):
        FeatureHooks(model, ["block.9"])


def test_feature_hooks_record_classifier_input_and_detach() -> None:
    built = build_model({"name": "cnn_tiny"}, 10, 1)
    hooks = FeatureHooks(built.module, [built.classifier], inputs=True)
    built.module(torch.randn(3, 1, 28, 28))
    assert hooks[built.classifier].shape == (3, 32)  # the penultimate embedding
    hooks.remove()
    hooks.clear()
    built.module(torch.randn(3, 1, 28, 28))
    assert hooks.features == {}


def test_every_registered_model_has_a_linear_classifier() -> None:
    for name in available_models():
        built = build_model({"name": name}, 10, 3)
        assert isinstance(built.module.get_submodule(built.classifier), nn.Linear), name


def test_timm_model_by_name() -> None:
    pytest.importorskip("timm")
    built = build_model({"source": "timm", "name": "resnet18"}, 10, 1)
    assert built.module(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert built.stages[-2:] == ("layer3", "layer4") and built.classifier == "fc"
