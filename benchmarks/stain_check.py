"""Stain robustness of a model trained by ``benchmarks/train_real_histo.py`` on CoNSeP (issue 17, item 4).

    python benchmarks/stain_check.py --work /tmp/coseg_real_histo --preset cpu

Two checks of the run ``train_real_histo.py`` left in ``--work`` (its best checkpoint, ``models/model.pt``):

- **CoNSeP held-out tiles with their stain perturbed**: the test part of the same source-image split, each tile
  colour-deconvolved (Ruifrok & Johnston's H&E-DAB vectors, ``skimage.color.rgb2hed``), its haematoxylin and eosin
  optical densities scaled (darker, paler, eosin-rich: ``CONDITIONS``) and recomposed; scored by the bundle's
  ``evaluate.json`` against the unchanged labels: binary PQ, AJI and Dice as in ``train_real_histo.py``.
- **GlaS images** (another lab and scanner; colon glands at 20x, no nucleus labels): the first ``--glas-images``
  training images, resampled 2x to the model's 40x and centre-cropped to ``--glas-crop``, run through the bundle's
  ``inference.json``. Without labels the check is the stain itself: the mean haematoxylin optical density inside the
  predicted nuclei over that of the rest of the tissue (``h_contrast``; > 1 when the model outlines the dark nuclei,
  about 1 or below when it outlines cytoplasm), the same ratio for CoNSeP's labelled nuclei and for the model's
  nuclei on the CoNSeP test tiles as references, and nuclei per 256² of tissue. A montage of the GlaS overlays is
  written beside the results.

Writes ``benchmarks/results/stain_check_consep_<preset>.json`` (no machine paths) and ``..._glas.png``. Not part of
CI; a few minutes of one CPU core.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image
from skimage.color import hed2rgb, rgb2hed

from coseg.io import read_label, read_rgb, write_json, write_rgb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_real_histo import BUNDLE, DATASETS, REPO, SHARED, evaluate, headline  # noqa: E402

#: name -> (haematoxylin factor, eosin factor) on the optical densities
CONDITIONS: dict[str, tuple[float, float]] = {
    "original": (1.0, 1.0),
    "darker": (1.6, 1.3),
    "paler": (0.55, 0.6),
    "eosin_rich": (1.0, 1.8),
}


def perturb(rgb: np.ndarray, h: float, e: float) -> np.ndarray:
    """``rgb`` (uint8, HxWx3) with its haematoxylin and eosin optical densities scaled by ``h`` and ``e``."""
    hed = rgb2hed(rgb.astype(np.float64) / 255.0)
    hed[..., 0] *= h
    hed[..., 1] *= e
    return (np.clip(hed2rgb(hed), 0, 1) * 255.0 + 0.5).astype(np.uint8)


def perturbed_dataset(prepared: Path, out: Path, h: float, e: float) -> int:
    """A copy of ``prepared`` whose test images are perturbed (labels and the other images linked); returns the
    number of test images."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ("datalist.json", "dataset.json"):
        shutil.copy(prepared / name, out / name)
    for child in prepared.iterdir():
        if child.is_dir() and child.name != "images":
            (out / child.name).symlink_to(child.resolve())
    (out / "images").mkdir()
    datalist = json.loads((prepared / "datalist.json").read_text(encoding="utf-8"))
    test = {item["image"] for item in datalist["test"]}
    for image in sorted((prepared / "images").iterdir()):
        rel = f"images/{image.name}"
        if rel in test:
            # PNG: no second JPEG loss on top of the perturbation
            write_rgb(out / "images" / (image.stem + ".png"), perturb(read_rgb(image), h, e))
        else:
            (out / rel).symlink_to(image.resolve())
    if any(not i.endswith(".png") for i in test):
        for part in ("training", "validation", "test"):
            for item in datalist[part]:
                if item["image"] in test:
                    item["image"] = str(Path(item["image"]).with_suffix(".png"))
        write_json(out / "datalist.json", datalist)
    return len(test)


def infer(
    weights: Path, inputs: Path, output_dir: Path, magnification: float, sem_classes: dict, inst_types: dict
) -> None:
    """The bundle's ``inference.json`` over the images of ``inputs`` (network rebuilt from ``weights``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(
            config_file=str(BUNDLE / "inference.json"),
            workflow_type="infer",
            ckpt_path=str(weights),
            dataset_dir=str(inputs),
            output_dir=str(output_dir),
            magnification=magnification,
            num_workers=0,
            sem_classes=sem_classes,
            inst_types=inst_types,
        )
        wf.initialize()
        wf.run()
        wf.finalize()


def stain_stats(rgb: np.ndarray, nuclei: np.ndarray) -> dict:
    """Mean haematoxylin optical density in ``nuclei`` over that of the rest of the tissue, and nuclei per 256²
    of tissue (tissue: not near-white)."""
    h = rgb2hed(rgb.astype(np.float64) / 255.0)[..., 0]
    tissue = rgb.astype(np.float64).mean(axis=-1) < 215
    inside = (nuclei > 0) & tissue
    rest = tissue & ~inside
    count = len(np.unique(nuclei[inside]))
    return {
        "h_contrast": float(h[inside].mean() / h[rest].mean()) if inside.any() and rest.any() else None,
        "nuclei_per_256sq_tissue": float(count * 65536 / max(int(tissue.sum()), 1)),
    }


def mean_stats(rows: list[dict]) -> dict:
    """Mean of each statistic over the images where it is defined."""
    out: dict[str, float | None] = {}
    for key in rows[0] if rows else ():
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/coseg_real_histo", help="train_real_histo.py's --work")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--glas-images", type=int, default=8)
    parser.add_argument("--glas-crop", type=int, default=768, help="centre crop of the 2x-resampled GlaS images")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = DATASETS["consep"]
    work = Path(args.work) / "consep"
    prepared, run_dir = work / "prepared", work / f"{args.preset}_seed{args.seed}"
    weights = run_dir / "models" / "model.pt"
    if not weights.is_file():
        raise SystemExit(f"{weights}: missing; run benchmarks/train_real_histo.py --dataset consep first")
    scratch = work / f"stain_check_{args.preset}_seed{args.seed}"
    common = {
        "ckpt_dir": str(run_dir / "models"),
        "model_preset": args.preset,
        "allow_random_encoder": True,
        "sem_classes": spec["sem_classes"],
        "inst_types": spec["inst_types"],
        "magnification": spec["magnification"],
        "num_workers": 0,
        "cache_rate": 0.0,
    }
    consep: dict[str, dict] = {}
    for name, (h, e) in CONDITIONS.items():
        data = scratch / f"data_{name}"
        n = perturbed_dataset(prepared, data, h, e)
        consep[name] = {"haematoxylin_factor": h, "eosin_factor": e, "test_images": n}
        summary, _ = evaluate({**common, "dataset_dir": str(data), "output_dir": str(scratch / f"eval_{name}")})
        consep[name].update(headline(summary))
        print(name, consep[name], flush=True)

    # references on CoNSeP's test tiles: labelled nuclei, and the model's nuclei
    datalist = json.loads((prepared / "datalist.json").read_text(encoding="utf-8"))
    tiles = scratch / "consep_test_images"
    shutil.rmtree(tiles, ignore_errors=True)
    tiles.mkdir(parents=True)
    for item in datalist["test"]:
        (tiles / Path(item["image"]).name).symlink_to((prepared / item["image"]).resolve())
    infer(weights, tiles, scratch / "consep_pred", spec["magnification"], spec["sem_classes"], spec["inst_types"])
    gt_rows, pred_rows = [], []
    for item in datalist["test"]:
        rgb = read_rgb(prepared / item["image"])
        gt_rows.append(stain_stats(rgb, read_label(prepared / item["label_inst"])))
        pred_rows.append(stain_stats(rgb, read_label(scratch / "consep_pred" / f"{Path(item['image']).stem}_inst.tif")))

    # GlaS: another lab, 20x -> 40x
    glas_in = scratch / "glas_images"
    shutil.rmtree(glas_in, ignore_errors=True)
    glas_in.mkdir(parents=True)
    sources = sorted((SHARED / "glas" / "train" / "images").iterdir())[: args.glas_images]
    c = args.glas_crop
    for src in sources:
        rgb = read_rgb(src)
        big = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] * 2, rgb.shape[0] * 2), Image.BICUBIC))
        y0, x0 = max((big.shape[0] - c) // 2, 0), max((big.shape[1] - c) // 2, 0)
        write_rgb(glas_in / (src.stem + ".png"), big[y0 : y0 + c, x0 : x0 + c])
    infer(weights, glas_in, scratch / "glas_pred", spec["magnification"], spec["sem_classes"], spec["inst_types"])
    glas_rows, panels = [], []
    for src in sources:
        rgb = read_rgb(glas_in / (src.stem + ".png"))
        glas_rows.append(stain_stats(rgb, read_label(scratch / "glas_pred" / f"{src.stem}_inst.tif")))
        if len(panels) < 4:
            panel = Image.open(scratch / "glas_pred" / f"{src.stem}_overlay.png").convert("RGB").resize((384, 384))
            panels.append(np.asarray(panel))
    result = {
        "benchmark": "stain robustness of a CoNSeP-trained model (benchmarks/stain_check.py)",
        "preset": args.preset,
        "seed": args.seed,
        "weights": "the best validation checkpoint of train_real_histo.py's run (model.pt)",
        "consep_test_perturbed": consep,
        "h_contrast_reference": {
            "consep_test_labelled_nuclei": mean_stats(gt_rows),
            "consep_test_predicted_nuclei": mean_stats(pred_rows),
        },
        "glas": {
            "images": [s.name for s in sources],
            "resampled": "2x bicubic (20x -> the model's 40x), centre crop",
            "crop": c,
            "predicted_nuclei": mean_stats(glas_rows),
            "per_image": dict(zip([s.name for s in sources], glas_rows)),
        },
    }
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"stain_check_consep_{args.preset}.json"
    write_json(out, result)
    if panels:
        write_rgb(out.with_name(out.stem + "_glas.png"), np.concatenate(panels, axis=1))
    print(json.dumps({k: v for k, v in result.items() if k != "glas"}, indent=2))
    print(json.dumps(result["glas"]["predicted_nuclei"]))
    print(f"written {out}")


if __name__ == "__main__":
    main()
