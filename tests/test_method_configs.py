"""configs/method/: a method's yaml states only what differs from the yaml it builds on (a base
yaml mirroring an ``Options`` class, or the method it extends); composed, it still holds every
option its ``Options`` declares, at ``method.<key>``, with the declared defaults."""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from conftest import REPO
from kdexp.methods import METHODS
from kdexp.methods.base import DistillationModule
from kdexp.methods.class_incremental import IncrementalModule
from kdexp.methods.feature import FeatureDistillationModule
from kdexp.methods.federated import FederatedModule
from kdexp.methods.joint import JointModule
from kdexp.methods.staged import InitStageModule
from kdexp.ranking.methods import RANKING_METHODS, RankingMethod

METHOD_DIR = REPO / "configs" / "method"
METHOD_YAMLS = sorted(p.stem for p in METHOD_DIR.glob("*.yaml"))
# configs/method/base/<name>.yaml: the options of the Options class that other methods inherit.
BASES = {
    "distill": DistillationModule,
    "feature": FeatureDistillationModule,
    "init_stage": InitStageModule,
    "incremental": IncrementalModule,
    "federated": FederatedModule,
    "joint_training": JointModule,
    "ranking": RankingMethod,  # task=ranking's methods (kdexp/ranking/methods/)
}


def composed_method(choice: str) -> dict[str, Any]:
    """The ``method`` node of ``train`` composed with ``method=<choice>`` (a fresh copy)."""
    return copy.deepcopy(_composed(choice))


@functools.cache
def _composed(choice: str) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(METHOD_DIR.parent), version_base="1.3"):
        return OmegaConf.to_container(compose("train", [f"method={choice}"]).method, resolve=True)


def own_lines(path: Path) -> tuple[list[str], dict[str, Any]]:
    """A yaml's defaults list and the keys it states itself."""
    body = yaml.safe_load(path.read_text()) or {}
    return body.pop("defaults", []), body


def test_base_yamls_are_the_inherited_options_classes() -> None:
    assert sorted(p.stem for p in (METHOD_DIR / "base").glob("*.yaml")) == sorted(BASES)
    for base, cls in BASES.items():
        node = composed_method(f"base/{base}")
        assert node.pop("name") == "???", base  # a base is not a method: each method yaml names itself
        assert node == dataclasses.asdict(cls.Options()), base


@pytest.mark.parametrize("choice", METHOD_YAMLS)
def test_every_method_config_matches_its_options(choice: str) -> None:
    """Composed, configs/method/<choice>.yaml holds exactly the options the method declares, with
    its defaults; a variant (hints_two_stage, apprentice_kd) changes values only in its own lines."""
    node = composed_method(choice)
    name = node.pop("name")
    cls = METHODS.get(name) if name in METHODS else RANKING_METHODS.get(name)  # an image method, else a ranking one
    if cls.method_name == "vanilla":
        assert node == {}  # CE alone: vanilla states no option, its Options defaults apply
        return
    defaults = dataclasses.asdict(cls.Options())
    assert set(node) == set(defaults), choice
    changed = {key for key in node if node[key] != defaults[key]}
    _, own = own_lines(METHOD_DIR / f"{choice}.yaml")
    assert changed <= set(own), (choice, {key: (node[key], defaults[key]) for key in changed - set(own)})
    if choice == cls.method_name:
        assert not changed, (choice, {key: (node[key], defaults[key]) for key in changed})


@pytest.mark.parametrize(
    "path", sorted(METHOD_DIR.glob("**/*.yaml")), ids=lambda p: p.relative_to(METHOD_DIR).as_posix()
)
def test_no_method_yaml_restates_what_it_builds_on(path: Path) -> None:
    """Each yaml (vanilla and base/distill aside) builds on one yaml, at its own package
    (``@_here_``), and states no value that one already gives (``name`` aside: every method yaml
    says which method it runs). A base yaml names its parent from the config root: a relative name
    would resolve against method/ when Hydra loads it as a choice, against method/base/ when
    another yaml pulls it in."""
    defaults, own = own_lines(path)
    if not defaults:
        assert path.stem in ("vanilla", "distill", "ranking"), f"{path.name} builds on nothing: start it with defaults"
        return
    assert len(defaults) == 2 and defaults[-1] == "_self_" and defaults[0].endswith("@_here_"), defaults
    parent = defaults[0].removesuffix("@_here_").removeprefix("/method/")  # relative to configs/method
    inherited = composed_method(parent)
    restated = {key: value for key, value in own.items() if key != "name" and inherited.get(key, object()) == value}
    assert not restated, f"{path.name} restates {restated}, which {parent} already gives"


def test_base_yamls_are_not_offered_as_methods() -> None:
    with pytest.raises(MissingConfigException) as err:
        composed_method("kdd")
    choices = str(err.value).split("Available options in 'method':")[1].split("Config search path")[0].split()
    assert choices == METHOD_YAMLS  # no "base"
