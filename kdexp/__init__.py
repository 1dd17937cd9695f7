"""kdexp: config-driven knowledge-distillation experiments.

The Python API (``kdexp.run``, ``kdexp.load_student``, ``kdexp.evaluate``, ``kdexp.export``) is
imported on first use, so ``import kdexp`` stays fast (no torch, Lightning or Hydra).
``kdexp.run`` is also the run layer's package (kdexp/run/); the package is callable, and calling
it is ``kdexp.api.run``.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["run", "load_student", "evaluate", "export"]


def __getattr__(name: str) -> Any:
    if name == "run":  # the package, callable (importing a submodule would make it the attribute anyway)
        import importlib

        return importlib.import_module("kdexp.run")
    if name in __all__:
        from kdexp import api

        return getattr(api, name)
    raise AttributeError(f"module 'kdexp' has no attribute {name!r}")
