"""What crosses the network: a payload is named tensors (weights, logits, indices); its size is
counted from those tensors, in bytes (numel × element size), as they are sent. The scalars that
travel beside them (the round number, a client's sample count, its accuracy) are not counted."""

from __future__ import annotations

from torch import Tensor, nn

Payload = dict[str, Tensor]


def nbytes(payload: Payload) -> int:
    """Bytes of the tensors in ``payload``."""
    return sum(t.numel() * t.element_size() for t in payload.values())


def weights_of(model: nn.Module) -> Payload:
    """A model's state (parameters and buffers) as a payload of detached copies."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def prefixed(payload: Payload, prefix: str) -> Payload:
    return {f"{prefix}{k}": v for k, v in payload.items()}


def unprefixed(payload: Payload, prefix: str) -> Payload:
    return {k[len(prefix):]: v for k, v in payload.items() if k.startswith(prefix)}
