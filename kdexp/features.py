"""Intermediate features by module path, via forward hooks: no model needs editing."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def check_paths(model: nn.Module, paths: Iterable[str], owner: str = "model") -> None:
    """Fail early, naming the available module paths, if any of ``paths`` is not in ``model``."""
    names = dict(model.named_modules())
    missing = [p for p in paths if p not in names]
    if missing:
        available = ", ".join(n for n in names if n) or "(none)"
        raise ValueError(
            f"{owner} has no module path(s) {missing}; available paths are: {available}"
        )


class FeatureHooks:
    """Record the outputs (or, with ``inputs=True``, the first inputs) of modules by path.

    ``hooks = FeatureHooks(model, ["layer2", "layer3"])``; after ``model(x)``, ``hooks.features``
    maps each path to the tensor of the last forward. Call ``remove()`` to detach the hooks.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], inputs: bool = False) -> None:
        self.paths = list(paths)
        check_paths(model, self.paths)
        self.features: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        for path in self.paths:
            module = model.get_submodule(path)
            if inputs:
                hook = module.register_forward_pre_hook(self._save_input(path))
            else:
                hook = module.register_forward_hook(self._save_output(path))
            self._handles.append(hook)

    def _save_output(self, path: str):
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            self.features[path] = output

        return hook

    def _save_input(self, path: str):
        def hook(_module: nn.Module, inputs: tuple) -> None:
            self.features[path] = inputs[0]

        return hook

    def __getitem__(self, path: str) -> Tensor:
        return self.features[path]

    def ordered(self) -> list[Tensor]:
        """The recorded features in the order the paths were given."""
        return [self.features[p] for p in self.paths]

    def clear(self) -> None:
        self.features.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
