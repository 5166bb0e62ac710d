"""Inferers for the Co-Seg++ output dict."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer
from monai.transforms import Resize
from monai.utils import convert_to_tensor

from coseg.keys import OutputKeys

__all__ = ["FULL_RESOLUTION_OUTPUTS", "INPUT_MODES", "CoSegSlidingWindowInferer", "resize_images"]

#: how an image meets the network's fixed input size (the bundles' ``input_mode``): ``"crop"`` -- windows of it at
#: its own resolution (training: random crops; inference: a sliding window); ``"resize"`` -- the whole image resized
#: to the input size (the paper, §4.1.2), outputs resized back to the image's grid
INPUT_MODES: tuple[str, ...] = ("crop", "resize")

#: the outputs at input resolution: what inference and evaluation use
FULL_RESOLUTION_OUTPUTS: tuple[str, ...] = (
    OutputKeys.SEM_LOGITS,
    OutputKeys.INST_BINARY,
    OutputKeys.INST_HV,
    OutputKeys.INST_TYPE,
)


def resize_images(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a batch of 2D maps as the bundles' ``input_mode: "resize"`` does: MONAI's ``Resize``, bilinear
    (``align_corners=False``), without anti-aliasing -- the settings of the ``Resized`` image transform in
    ``train.json``, so that training and inference see the same images. Bilinear weights sum to one, so resizing
    commutes with the per-channel normalisation (training resizes before it, inference after it); MONAI's Gaussian
    anti-aliasing would not (it pads with zeros, which also darkens the border of a white-background slide). It is
    meant for images near the network's size (the paper's datasets: 0.5x to 2x, where a 2x shrink is an exact 2x2
    mean); tile larger images with ``input_mode: "crop"`` instead.

    Args:
        images: ``(B, C, H, W)``, any float dtype.
        size: ``(h, w)``.

    Returns:
        ``(B, C, h, w)``, a plain tensor on the input's device (``images`` itself when the size already matches).

    Raises:
        ValueError: ``images`` is not 4D or ``size`` not two positive ints.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be two positive ints (h, w), got {size}")
    if tuple(images.shape[-2:]) == size:
        return images
    b, c, h, w = images.shape
    resize = Resize(spatial_size=size, mode="bilinear", anti_aliasing=False)
    out = resize(convert_to_tensor(images, track_meta=False).reshape(b * c, h, w))  # channels are independent
    return convert_to_tensor(out, track_meta=False).reshape(b, c, *size)


class CoSegSlidingWindowInferer(SlidingWindowInferer):
    """MONAI's sliding-window inference over images of any size, keeping the full-resolution outputs only.

    The pass-1 prompts and consistency maps (lower resolution, used by the loss) are dropped inside each window,
    so the stitched result holds ``sem_logits``, ``inst_binary``, ``inst_hv`` and ``inst_type`` at the image's
    size. All other arguments are those of :class:`monai.inferers.SlidingWindowInferer`. When gradients are off (as
    in MONAI's evaluators) the windows run under ``torch.inference_mode``.

    With ``input_mode="resize"`` (the paper's handling, §4.1.2) each image is first resized to ``roi_size``
    (:func:`resize_images`), so the network sees it whole in one window, and the outputs are resized back to the
    image's grid (bilinear on logits and distance maps, before any thresholding): post-processing, metrics and
    written files stay on the input grid.

    Args:
        keep: the output keys to stitch.
        input_mode: one of :data:`INPUT_MODES`.

    Raises:
        ValueError: an unknown ``input_mode``, or ``"resize"`` with a ``roi_size`` that is not two positive ints.
    """

    def __init__(
        self, *args: Any, keep: Sequence[str] = FULL_RESOLUTION_OUTPUTS, input_mode: str = "crop", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.keep = tuple(keep)
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
        self.input_mode = input_mode
        if input_mode == "resize":
            roi = tuple(self.roi_size) if isinstance(self.roi_size, Sequence) else (self.roi_size,) * 2
            if len(roi) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in roi):
                raise ValueError(f"input_mode 'resize' needs roi_size of two positive ints (h, w), got {roi}")
            self.input_size: tuple[int, int] | None = (roi[0], roi[1])
        else:
            self.input_size = None

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        def predictor(x: torch.Tensor, *a: Any, **k: Any) -> dict[str, torch.Tensor]:
            out = network(x, *a, **k)
            return {key: out[key] for key in self.keep}

        # evaluation runs under no_grad; inference_mode also skips version counters and view tracking
        with torch.inference_mode(not torch.is_grad_enabled()):
            if self.input_size is None:
                return super().__call__(inputs, predictor, *args, **kwargs)
            grid = tuple(inputs.shape[-2:])
            outputs = super().__call__(resize_images(inputs, self.input_size), predictor, *args, **kwargs)
            return {key: resize_images(value, grid) for key, value in outputs.items()}
