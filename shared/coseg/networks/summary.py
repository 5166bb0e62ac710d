"""Parameter counts and multiply-accumulates of a Co-Seg++ preset.

``python -m coseg.networks.summary --preset paper [--image-size 1024] [--json out.json]``

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the meta device (no real compute;
``FLOPs = 2 x MACs``). Two totals are reported:

- all MACs: convolutions, Linear layers AND the attention / mask matrix products;
- layer MACs: convolutions and Linear layers only — what module-hook counters such as thop count (they do not
  see ``scaled_dot_product_attention`` or ``@``). The paper's Table 9 (869.67 G per 1024² image) matches this
  convention: its "FLOPs" are layer MACs.

Element-wise work (activations, norms, the selective scan's recurrence) is counted by neither.
"""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from coseg.networks.coseg import CoSegPlusPlus
from coseg.networks.weights import count_parameters

__all__ = ["model_cost", "main"]


# aten ops behind nn.Linear / nn.Conv*; everything else FlopCounterMode counts is an attention or mask product
_LAYER_OPS = ("convolution", "addmm", "mm", "baddbmm")


def _count_macs(fn, *args: Any) -> tuple[int, int]:
    """``(all MACs, layer MACs)`` of ``fn(*args)``."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    per_op = counter.get_flop_counts()["Global"]
    total = sum(per_op.values())
    layers = sum(v for op, v in per_op.items() if str(op).split(".")[-1] in _LAYER_OPS)
    return int(total) // 2, int(layers) // 2


def model_cost(preset: str = "paper", image_size: int | None = None, **overrides: Any) -> dict[str, Any]:
    """Learnable / frozen parameters and MACs per image of a preset.

    The trunk is counted frozen as in training with an official SAM2 checkpoint (``freeze_encoder=True``).

    Returns:
        a dict with ``learnable_params``, ``frozen_params``, ``total_params``, ``image_size``,
        ``macs_per_image`` (whole forward, all MACs), ``layer_macs_per_image`` (Linear/conv only, Table 9's
        convention), ``encoder_macs`` (image encoder alone), ``decoding_macs`` (everything after the encoder),
        and ``macs_if_encoder_recomputed_per_pass`` (what running the encoder once per pass, as the released
        code does, would cost).
    """
    overrides.setdefault("freeze_encoder", True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            model = CoSegPlusPlus.from_preset(preset, **overrides)
    model.eval()
    size = int(image_size or model.image_size)
    learnable, frozen = count_parameters(model)
    x = torch.empty(1, 3, size, size, device="meta")
    # grad mode stays on: FlopCounterMode's module tracker needs grad_fns; on meta tensors nothing is stored
    macs, layer_macs = _count_macs(model, x)
    enc_macs, enc_layer_macs = _count_macs(model.image_encoder, x)
    return {
        "preset": preset,
        "image_size": size,
        "num_forwards": model.num_forwards,
        "learnable_params": learnable,
        "frozen_params": frozen,
        "total_params": learnable + frozen,
        "macs_per_image": macs,
        "layer_macs_per_image": layer_macs,
        "encoder_macs": enc_macs,
        "encoder_layer_macs": enc_layer_macs,
        "decoding_macs": macs - enc_macs,
        "macs_if_encoder_recomputed_per_pass": macs + (model.num_forwards - 1) * enc_macs,
        "counting": "torch.utils.flop_counter on the meta device; MACs = FLOPs / 2; layer MACs = conv + Linear",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", help="paper | tiny | cpu | micro")
    parser.add_argument("--image-size", type=int, default=None, help="square input size (default: the preset's)")
    parser.add_argument("--num-forwards", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    overrides = {} if args.num_forwards is None else {"num_forwards": args.num_forwards}
    cost = model_cost(args.preset, args.image_size, **overrides)
    print(f"Co-Seg++ preset {cost['preset']!r} at {cost['image_size']}x{cost['image_size']}:")
    print(f"  learnable parameters : {cost['learnable_params'] / 1e6:10.2f} M")
    print(f"  frozen parameters    : {cost['frozen_params'] / 1e6:10.2f} M")
    print(f"  MACs per image       : {cost['macs_per_image'] / 1e9:10.2f} G  (FLOPs = 2 x MACs)")
    layer = cost["layer_macs_per_image"] / 1e9
    print(f"    conv + Linear only : {layer:10.2f} G  (module-hook count as Table 9's 869.67 G)")
    print(f"    image encoder      : {cost['encoder_macs'] / 1e9:10.2f} G")
    print(f"    prompts + decoding : {cost['decoding_macs'] / 1e9:10.2f} G")
    print(f"  encoder recomputed per pass (released code): {cost['macs_if_encoder_recomputed_per_pass'] / 1e9:.2f} G")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(cost, f, indent=2)
    return cost


if __name__ == "__main__":
    main()
