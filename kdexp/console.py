"""Console output that never crashes a run: under a non-UTF-8 encoding (``PYTHONIOENCODING=ascii``,
``latin-1``, a C locale) characters the stream cannot encode degrade to ASCII (± → +/-, → → ->,
• → *, × → x, — → -, anything else → ?) instead of raising UnicodeEncodeError. And the run's
config, shown at its start as a tree (the console and the top of ``train.log``)."""

from __future__ import annotations

import codecs
import io
import logging
import sys
import warnings
from typing import Any

ASCII_FALLBACK = {
    "±": "+/-", "→": "->", "←": "<-", "•": "*", "×": "x", "—": "-", "–": "-", "…": "...", "≈": "~",
    "≤": "<=", "≥": ">=", "µ": "u", "━": "-", "─": "-", "│": "|", "✓": "v", "✗": "x", "·": ".",
}
ERRORS = "kdexp_ascii"


def _fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    text = err.object[err.start : err.end]
    return "".join(ASCII_FALLBACK.get(ch, "?") for ch in text), err.end


codecs.register_error(ERRORS, _fallback)


def ascii_safe_streams() -> None:
    """Make stdout and stderr degrade characters their encoding lacks (idempotent, cheap)."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("_", "-")
        if encoding.startswith("utf") or not hasattr(stream, "reconfigure"):
            continue
        try:
            stream.reconfigure(errors=ERRORS)
        except (AttributeError, ValueError, OSError):  # a replaced or closed stream: leave it
            pass


def config_tree(cfg: Any) -> Any:
    """A Rich tree of a config: one branch per top-level group, its YAML beneath (resolved where
    it can be; the ``${...}`` left as written where it cannot yet)."""
    from omegaconf import DictConfig, OmegaConf
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, node in cfg.items():
        if not isinstance(node, DictConfig):  # a scalar or a list, written as YAML writes it
            tree.add(OmegaConf.to_yaml(OmegaConf.create({key: node})).strip())
            continue
        try:
            text = OmegaConf.to_yaml(node, resolve=True)
        except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra run: show it as written
            text = OmegaConf.to_yaml(node)
        tree.add(key).add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    return tree


def show_config(cfg: Any) -> None:
    """Print the run's config as a tree on stdout and at the top of its log files (``train.log``)."""
    from rich.console import Console

    tree = config_tree(cfg)
    Console(soft_wrap=True).print(tree)
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if files:
        plain = io.StringIO()
        Console(file=plain, width=120, color_system=None, soft_wrap=True).print(tree)
        for handler in files:
            handler.acquire()
            try:
                handler.stream.write(plain.getvalue())
                handler.flush()
            finally:
                handler.release()


def _not_advertising(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡")


def quiet_library_noise() -> None:
    """Drop messages that are advertising or internal deprecations, not about the user's run
    (idempotent: a notebook or a test may call it once per run)."""
    warnings.filterwarnings("ignore", message=".*treespec.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_not_advertising)  # once: same object
