"""Names of the network outputs and of the data dictionary entries, defined once.

Every module that reads or writes these dictionaries imports the names from here.
"""

from __future__ import annotations

__all__ = ["OutputKeys", "DataKeys"]


class OutputKeys:
    """Keys of the dictionary returned by :class:`coseg.networks.CoSegPlusPlus`.

    Shapes for an input of shape ``(B, 3, H, W)`` and image-embedding grid ``(h, w) = (H/16, W/16)``:

    - ``SEM_LOGITS``: ``(B, num_sem_classes, H, W)`` semantic logits (background is channel 0).
    - ``INST_BINARY``: ``(B, 2, H, W)`` object-vs-background logits (softmax over the 2 channels).
    - ``INST_HV``: ``(B, 2, H, W)`` horizontal (channel 0) and vertical (channel 1) distance maps in [-1, 1].
    - ``INST_TYPE``: ``(B, num_inst_types, H, W)`` per-pixel object type logits (background is channel 0).
    - ``SEM_PROMPT`` / ``INST_PROMPT``: ``(B, 1, 4h, 4w)`` pass-1 low-resolution binary mask logits
      (semantic foreground, object foreground) that prompt the other task in the next pass.
    - ``SEM_CONSISTENCY`` / ``INST_CONSISTENCY``: ``(B, 2, h, w)`` pass-1 spatial probability maps
      (softmax of a 1x1 conv on each task-specific image embedding) for the KL consistency loss.
    - ``SEM_CROSS_ATTENTION`` / ``INST_CROSS_ATTENTION`` (only with ``return_attention=True``):
      ``(B, heads, tokens, h*w)`` attention of the semantic (instance) queries over the instance (semantic)
      image tokens in the last decoder layer of the last pass: instance->semantic and semantic->instance
      guidance.
    """

    SEM_LOGITS = "sem_logits"
    INST_BINARY = "inst_binary"
    INST_HV = "inst_hv"
    INST_TYPE = "inst_type"
    SEM_PROMPT = "sem_prompt_logits"
    INST_PROMPT = "inst_prompt_logits"
    SEM_CONSISTENCY = "sem_consistency"
    INST_CONSISTENCY = "inst_consistency"
    SEM_CROSS_ATTENTION = "sem_cross_attention"
    INST_CROSS_ATTENTION = "inst_cross_attention"


class DataKeys:
    """Keys of the data dictionaries that flow through the transforms, the losses and the metrics.

    - ``IMAGE``: the image, ``(3, H, W)`` float.
    - ``LABEL_SEM``: semantic (tissue / region) label map, integer class per pixel, 0 = background.
    - ``LABEL_INST``: instance label map, one integer id per object (ids arbitrary), 0 = background.
    - ``LABEL_TYPE``: object type per pixel, 0 = background.
    - ``LABEL``: a single combined label map (MONAI Label hands bundles only ``{image, label}``);
      see :mod:`coseg.data.label_codec` for the encoding.
    - ``LABEL_HV`` / ``LABEL_BINARY``: targets derived from ``LABEL_INST`` after augmentation.
    - ``PRED``: the single label map written for MONAI Label and users.
    """

    IMAGE = "image"
    LABEL = "label"
    LABEL_SEM = "label_sem"
    LABEL_INST = "label_inst"
    LABEL_TYPE = "label_type"
    LABEL_HV = "label_hv"
    LABEL_BINARY = "label_binary"
    PRED = "pred"
