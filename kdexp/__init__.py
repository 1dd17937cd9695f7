"""kdexp: config-driven knowledge-distillation experiments.

The Python API (``kdexp.run``, ``kdexp.load_student``, ``kdexp.evaluate``, ``kdexp.export``) is
imported on first use, so ``import kdexp`` stays fast (no torch, Lightning or Hydra). The run
layer is the package ``kdexp.runner``, so ``kdexp.run`` is only ever the API function.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["run", "load_student", "evaluate", "export"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kdexp import api

        return getattr(api, name)
    raise AttributeError(f"module 'kdexp' has no attribute {name!r}")
