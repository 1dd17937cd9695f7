"""``takd``: Teacher Assistant Knowledge Distillation (Mirzadeh et al., AAAI 2020, "Improved
Knowledge Distillation via Teacher Assistant").

When the teacher is far larger than the student, distil through intermediate-size assistants:
teacher → assistant 1 → … → student, each step Hinton KD from the step before. The chain — one
sub-run per link, resumable, every link reported — is run by ``kdexp.chain``, as for Born-Again.
"""

from __future__ import annotations

from typing import Any

from kdexp.methods.kd import KDModule
from kdexp.models import BuiltModel


class TAKDModule(KDModule):
    """One link of the chain: loss = ce_weight · CE(s, y) + kd_weight · T² · KL(softmax(t/T) ‖ softmax(s/T)),

    t = the previous link (the teacher for link 1). Defaults: the repository's KD recipe (T=4,
    0.1 CE / 0.9 KD) at every link. ``assistants`` names the registered models between teacher
    and student, largest first, e.g. [cnn_medium,cnn_small].
    """

    chain_runner = True

    def __init__(
        self, student: BuiltModel, teacher: BuiltModel, assistants: list[str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(student, teacher, assistants=list(assistants or []), **kwargs)

    @classmethod
    def chain_links(cls, hparams: dict[str, Any]) -> list[dict[str, Any] | None]:
        """One link per assistant, then the run's own student."""
        return [{"source": "kdexp", "name": name} for name in hparams.get("assistants") or []] + [None]
