"""Hydra config source ``kdexp-models://``: ``teacher=<model>`` and ``student=<model>`` for every
model in kdexp's model registry, without a yaml file per model and role.

``teacher/<name>`` and ``student/<name>`` load as ``{source: kdexp, name: <name>}`` for any name
that no yaml file in ``configs/`` provides (files such as ``teacher/timm.yaml`` win: they come
first in the search path). The name is checked when the model is built, against the registry, so
a misspelt name fails with the list of registered models; composing a config needs no torch.
Listing the choices (``--help``, tab completion) reads the registry itself.

:class:`ModelSearchPath` puts this source on every search path Hydra builds, the one ``--help``
lists config groups from included, after the ``configs/`` folder and after the user's own config
folders (``kdexp --config-dir``, kdexp.tools.config): their files win, so a user's
``student/<name>.yaml`` is found before this catch-all.

It also serves ``teacher/recipe/<data>`` for a data set that has no recipe file (a user's own
data): the short Fashion-MNIST recipe (``defaults: [fashion_mnist]``); a user's
``teacher/recipe/<data>.yaml`` wins.
"""

from __future__ import annotations

from typing import List, Optional

from hydra.core.object_type import ObjectType
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

ROLES = ("teacher", "student")
RECIPES = "teacher/recipe"
FALLBACK_RECIPE = "fashion_mnist"  # configs/teacher/recipe/: a short recipe (4 epochs), for data without one


class ModelConfigSource(ConfigSource):
    @staticmethod
    def scheme() -> str:
        return "kdexp-models"

    def available(self) -> bool:
        return True

    @staticmethod
    def _split(config_path: str) -> tuple[str, str]:
        path = config_path.strip("/")
        path = path[: -len(".yaml")] if path.endswith(".yaml") else path
        role, _, name = path.partition("/")
        return role, name

    @staticmethod
    def _recipe(config_path: str) -> str | None:
        """The data name of ``teacher/recipe/<data>``, else None."""
        role, name = ModelConfigSource._split(config_path)
        group, _, data = name.partition("/")
        return data if role == "teacher" and group == "recipe" and data and "/" not in data else None

    def is_group(self, config_path: str) -> bool:
        role, name = self._split(config_path)
        return role in ROLES and not name

    def is_config(self, config_path: str) -> bool:
        role, name = self._split(config_path)
        model = role in ROLES and bool(name) and "/" not in name and name != "recipe"
        return model or self._recipe(config_path) not in (None, FALLBACK_RECIPE)

    def load_config(self, config_path: str) -> ConfigResult:
        if not self.is_config(config_path):
            raise ConfigLoadError(f"kdexp-models: {config_path} is not a model config")
        _, name = self._split(config_path)
        recipe = self._recipe(config_path) is not None
        return ConfigResult(
            config=OmegaConf.create({"defaults": [FALLBACK_RECIPE]} if recipe else {"source": "kdexp", "name": name}),
            path=f"{self.scheme()}://{self.path}",
            provider=self.provider,
            header={"package": None},
        )

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        if not self.is_group(config_path) or results_filter == ObjectType.GROUP:
            return []
        from kdexp.models import available_models  # imports torch: only for --help and completion

        return available_models()


class ModelSearchPath(SearchPathPlugin):
    """``kdexp-models://kdexp`` on every search path (runs, the Python API, ``--help``), after the
    user's config folders (``--config-dir``), which kdexp places here rather than Hydra."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from kdexp.tools.config import user_config_dirs

        present = {element.path for element in search_path.get_path()}
        for folder in user_config_dirs():
            if f"file://{folder}" not in present:
                search_path.append(provider="command-line", path=f"file://{folder}")
        if not any(element.path == "kdexp-models://kdexp" for element in search_path.get_path()):
            search_path.append(provider="kdexp-models", path="kdexp-models://kdexp")
