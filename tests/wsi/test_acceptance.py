"""Issue 8's acceptance check: on a 2048 x 2048 image stitched from real CoNSeP tiles, tiled whole-slide inference
and whole-image inference (the bundle's path: ``CoSegSlidingWindowInferer`` over the whole image, then
``postprocess_outputs``) of the same trained micro model agree, and no nucleus is cut at a tile border."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from coseg.histo.geojson import load_features
from coseg.metrics.instance import panoptic_quality
from coseg.postprocess import postprocess_outputs
from coseg.transforms import SAM2Normalized
from coseg.wsi import OutputSettings, TileSettings, WholeSlideInferer

from .conftest import INST_TYPES, SEM_CLASSES, consep_mosaic, micro_inferer, micro_network, watershed
from .test_merge import cut_objects

TILE = 320  # tile borders every 320 px: through the CoNSeP tiles (256 px), not along their seams


@pytest.mark.slow
@pytest.mark.parametrize(
    "hv_head, normalisation",
    [
        ("zeroed", "image"),  # HoVer-Net's per-image watershed: objects from the object map alone
        ("trained", "fixed"),  # the trained HV maps, context-free watershed (the bundles' default)
    ],
)
def test_tiled_and_whole_image_inference_agree_on_real_tissue(
    shared_dir, trained_micro, tmp_path, hv_head, normalisation
):
    mosaic = consep_mosaic(shared_dir, 8, seed=11)
    assert mosaic.shape == (2048, 2048, 3)
    path = tmp_path / "mosaic.png"
    Image.fromarray(mosaic).save(path)
    network = micro_network(trained_micro if hv_head == "zeroed" else trained_micro.with_name("model_hv.pt"))
    params = watershed(normalisation=normalisation)

    # the whole-image path of inference.json
    image = torch.from_numpy(mosaic).permute(2, 0, 1).contiguous().float()
    image = SAM2Normalized(keys="image")({"image": image})["image"]
    with torch.no_grad():
        outputs = micro_inferer(batch=32)(image[None], network)
    whole = postprocess_outputs(outputs, params=params, with_contours=False)[0]
    whole_inst = whole.inst_map

    result = WholeSlideInferer(
        network=network,
        inferer=micro_inferer(batch=32),
        sem_classes=SEM_CLASSES,
        inst_types=INST_TYPES,
        output_dir=tmp_path / "out",
        watershed=params,
        tiling=TileSettings(tile_size=TILE, tissue_detection=False),
        outputs=OutputSettings(output_tile=64),
        progress=False,
    )(path)[0]
    tiled = tifffile.imread(result.outputs["inst"]).astype(np.int64)

    crossing = set()  # whole-image nuclei with pixels on both sides of a tile border
    for b in range(TILE, 2048, TILE):
        for a, c in ((whole_inst[:, b - 1], whole_inst[:, b]), (whole_inst[b - 1], whole_inst[b])):
            crossing.update(a[(a == c) & (a > 0)].tolist())
    assert whole_inst.max() > 300 and len(crossing) > 30, "the test needs many nuclei, many across tile borders"
    pq = panoptic_quality(whole_inst, tiled)[2]
    assert pq >= 0.98, f"PQ between tiled and whole-image instances is {pq:.4f}"
    assert cut_objects(tiled, whole_inst, TILE) == 0
    assert result.summary["joined_across_tiles"] > 30
    # one instance per id, in the map, the table and the GeoJSON alike
    n = result.summary["nuclei"]
    assert sorted(np.unique(tiled[tiled > 0])) == list(range(1, n + 1))
    detections = [f for f in load_features(result.outputs["geojson"]) if f["properties"]["objectType"] == "detection"]
    assert len(detections) == n
    # the semantic maps agree too (blended logits, then the same clean-up)
    sem = tifffile.imread(result.outputs["sem"])
    assert (sem == whole.sem_map).mean() > 0.999
