"""Inferers for the Co-Seg++ output dict."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

from coseg.keys import OutputKeys

__all__ = ["FULL_RESOLUTION_OUTPUTS", "CoSegSlidingWindowInferer"]

#: the outputs at input resolution: what inference and evaluation use
FULL_RESOLUTION_OUTPUTS: tuple[str, ...] = (
    OutputKeys.SEM_LOGITS,
    OutputKeys.INST_BINARY,
    OutputKeys.INST_HV,
    OutputKeys.INST_TYPE,
)


class CoSegSlidingWindowInferer(SlidingWindowInferer):
    """MONAI's sliding-window inference over images of any size, keeping the full-resolution outputs only.

    The pass-1 prompts and consistency maps (lower resolution, used by the loss) are dropped inside each window,
    so the stitched result holds ``sem_logits``, ``inst_binary``, ``inst_hv`` and ``inst_type`` at the image's
    size. All arguments are those of :class:`monai.inferers.SlidingWindowInferer`. When gradients are off (as in
    MONAI's evaluators) the windows run under ``torch.inference_mode``.

    Args:
        keep: the output keys to stitch.
    """

    def __init__(self, *args: Any, keep: Sequence[str] = FULL_RESOLUTION_OUTPUTS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep = tuple(keep)

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        def predictor(x: torch.Tensor, *a: Any, **k: Any) -> dict[str, torch.Tensor]:
            out = network(x, *a, **k)
            return {key: out[key] for key in self.keep}

        # evaluation runs under no_grad; inference_mode also skips version counters and view tracking
        with torch.inference_mode(not torch.is_grad_enabled()):
            return super().__call__(inputs, predictor, *args, **kwargs)
