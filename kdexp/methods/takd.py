"""``takd``: Teacher Assistant Knowledge Distillation (Mirzadeh et al., AAAI 2020, "Improved
Knowledge Distillation via Teacher Assistant").

When the teacher is far larger than the student, distil through intermediate-size assistants:
teacher → assistant 1 → … → student, each step Hinton KD from the step before. The chain — one
sub-run per link, resumable, every link reported — is run by ``kdexp.runner.chain``, as for Born-Again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdexp.methods.declarations import Chain
from kdexp.methods.kd import KDModule
from kdexp.methods.options import option
from kdexp.methods.registry import register_method

ASSISTANTS_WHY = "registered model names between teacher and student, largest first, e.g. [cnn_medium,cnn_small]"


@register_method("takd")
class TAKDModule(KDModule):
    """One link of the chain: loss = ce_weight · CE(s, y) + kd_weight · T² · KL(softmax(t/T) ‖ softmax(s/T)),

    t = the previous link (the teacher for link 1). Defaults: the repository's KD recipe (T=4,
    0.1 CE / 0.9 KD) at every link. ``assistants`` names the registered models between teacher
    and student, largest first, e.g. [cnn_medium,cnn_small].
    """

    @dataclass
    class Options(KDModule.Options):
        assistants: list[str] = option(["cnn_medium"], ASSISTANTS_WHY, min_items=1)

        def __post_init__(self) -> None:
            from kdexp.models import available_models

            unknown = [name for name in self.assistants if name not in available_models()]
            if unknown:
                raise ValueError(
                    f"method.assistants names unknown model(s) {unknown}; registered models are: "
                    f"{', '.join(available_models())}"
                )

    chain = Chain(step="generation", folder="gen")  # link k in <run>/gen<k>/
    members_field = "generations"  # every link's student, the teacher as generation 0

    @classmethod
    def chain_links(cls, options: Any) -> list[dict[str, Any] | None]:
        """One link per assistant, then the run's own student."""
        return [{"source": "kdexp", "name": name} for name in cls.options_from(options).assistants] + [None]
