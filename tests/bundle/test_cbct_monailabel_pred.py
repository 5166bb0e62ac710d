"""What MONAI Label gets from an exported coseg_cbct with ``--set tooth_types=fdi``, run the way its
``BundleInferTask`` runs a bundle (``preprocessing``, ``inferer(image[None], network)``, ``decollate_batch``,
``postprocessing``): ``pred`` holds the learned FDI numbers in ToothFairy2 ids, and the label names MONAI Label
builds from ``metadata.json``'s ``channel_def`` name exactly those ids. The MONAI Label server itself is tested in
its own environment (``test_monailabel.py``); the network here is an oracle (:mod:`tests.dental.oracle`) standing in
for trained weights, so every tooth's number is known."""

from __future__ import annotations

import json
import warnings

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import decollate_batch

from coseg.bundle import export_bundle
from coseg.bundle.archive import extract_bundle
from coseg.dental.labels import FDI_TEETH, TOOTHFAIRY2_LABELS
from coseg.dental.synthetic import write_toothfairy2_like
from coseg.networks import CoSegPlusPlus

from ..dental.oracle import load_case, oracle_for
from .conftest import CBCT, CBCT_MICRO_OVERRIDES, make_source_bundle

SIZE = 96


def test_exported_fdi_bundle_gives_monai_label_the_learned_numbers_in_toothfairy2_ids(tmp_path):
    source = make_source_bundle(tmp_path / "src" / "coseg_cbct", bundle=CBCT)
    torch.manual_seed(0)
    fdi_net = CoSegPlusPlus.from_preset("micro", num_sem_classes=4, num_inst_types=33, freeze_encoder=False)
    torch.save(fdi_net.state_dict(), source / "models" / "model.pt")  # weights trained with tooth_types "fdi"
    overrides = {**CBCT_MICRO_OVERRIDES, "tooth_types": "fdi", "patch_size": SIZE, "magnification": 10}
    bundle = extract_bundle(export_bundle(source, tmp_path / "dist", overrides=overrides), tmp_path / "app")
    configs = bundle / "configs"
    # /train writes FDI weights and /infer reads them as such: --set reaches both configs
    train = json.loads((configs / "train.json").read_text(encoding="utf-8"))
    inference = json.loads((configs / "inference.json").read_text(encoding="utf-8"))
    assert train["tooth_types"] == inference["tooth_types"] == "fdi"

    # MONAI Label's label names: channel_def without background, lower-cased (BundleInferTask.__init__)
    meta = json.loads((configs / "metadata.json").read_text(encoding="utf-8"))
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    labels = {v.lower(): int(k) for k, v in channel_def.items() if v.lower() != "background"}
    toothfairy2 = {name.lower(): i for name, i in TOOTHFAIRY2_LABELS.items()}
    assert all(toothfairy2[name] == i for name, i in labels.items())  # the names are ToothFairy2's for those ids
    assert sorted(labels.values()) == [1, 2, 7, *FDI_TEETH]

    root = write_toothfairy2_like(tmp_path / "studies", num_cases=1, shape=(24, 48, 48), seed=11, fmt="nii.gz")
    image_path = root / "imagesTr" / "ToothFairy2F_001_0000.nii.gz"
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser.update({"bundle_root": str(bundle)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert parser.get_parsed_content("network_def").num_inst_types == 33  # the config reads the FDI weights
        data = parser.get_parsed_content("preprocessing")({"image": str(image_path)})
        inferer = parser.get_parsed_content("inferer")
        window, channels = inferer.window, inferer.channels
        oracle = oracle_for(root, size=SIZE, window=window, channels=channels)
        with torch.no_grad():
            outputs = inferer(data["image"][None], oracle)
        data["pred"] = decollate_batch(outputs)[0]
        data = parser.get_parsed_content("postprocessing")(data)
    assert inferer.numbering == "learned" and oracle.unknown == 0
    pred = np.asarray(data["pred"])
    pred = pred[0] if pred.ndim == 4 else pred
    _, truth = load_case(root)  # ToothFairy2 ids
    assert pred.shape == truth.shape
    assert set(np.unique(pred).tolist()) <= {0, *labels.values()}
    for region in (1, 2, 7):
        found, counts = np.unique(pred[truth == region], return_counts=True)
        assert found[np.argmax(counts)] == region, f"ToothFairy2 region {region}: mostly {found[np.argmax(counts)]}"
    numbered = 0
    for fdi in sorted(set(np.unique(truth).tolist()) & set(FDI_TEETH)):
        inside = pred[truth == fdi]
        found, counts = np.unique(inside[np.isin(inside, FDI_TEETH)], return_counts=True)
        if len(found):  # a tooth the watershed found: its voxels carry its own FDI number
            assert found[np.argmax(counts)] == fdi, f"tooth {fdi} is mostly {found[np.argmax(counts)]}"
            numbered += 1
    assert numbered >= 20
