"""What a user of the packaged bundles does, run by the tests in a fresh interpreter that cannot import ``coseg``.

Started as ``python -S fresh_bundle_user.py ARGS.json`` with only site-packages on ``PYTHONPATH`` (no ``.pth`` files
are processed, so the repository's editable ``coseg`` install is invisible). It downloads the bundle zips from
``file://`` URLs, loads the networks with ``monai.bundle.load``, checks each bundle's single-tensor view with
``verify_net_in_out``, runs ``inference.json`` through ``ConfigWorkflow`` for every bundle in one process, and writes
what it saw to the JSON file named in the arguments for the test to check.

Arguments: ``{"bundle_dir", "report", "bundles": [{"url", "net_id", "spatial_shape", "inputs", "output_dir"}]}``
(``net_id``: the config item ``verify_net_in_out`` checks; ``spatial_shape``: the size of its random input).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path


def _volume_info(path: Path) -> dict:
    import nibabel as nib
    import numpy as np

    image = nib.load(path)
    return {
        "shape": list(image.shape),
        "affine": np.asarray(image.affine).tolist(),
        "values": sorted(int(v) for v in np.unique(np.asarray(image.dataobj))),
    }


def main(args_file: str) -> None:
    args = json.loads(Path(args_file).read_text(encoding="utf-8"))
    report: dict = {"coseg_importable_at_start": importlib.util.find_spec("coseg") is not None}
    if report["coseg_importable_at_start"]:
        raise RuntimeError("coseg is importable before any bundle is on sys.path: the test would prove nothing")

    import monai.bundle
    import torch
    from monai.bundle import ConfigWorkflow

    warnings.simplefilter("ignore")
    bundle_dir = Path(args["bundle_dir"])
    specs = []
    for spec in args["bundles"]:
        name = Path(spec["url"]).name.rsplit("_v", 1)[0]
        monai.bundle.download(name=name, url=spec["url"], bundle_dir=str(bundle_dir), progress=False)
        specs.append((name, spec))
    # the bundles carry their code: put each bundle folder on the path (MONAI does it only in ConfigWorkflow.run)
    for name, _ in specs:
        sys.path.insert(0, str(bundle_dir / name))

    report["bundles"] = {}
    for name, spec in specs:
        root = bundle_dir / name
        net = monai.bundle.load(name=name, bundle_dir=str(bundle_dir), workflow_type="inference", device="cpu")
        state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
        same = all(torch.equal(state[k], v) for k, v in net.state_dict().items())
        monai.bundle.verify_net_in_out(
            net_id=spec["net_id"],
            meta_file=str(root / "configs" / "metadata.json"),
            config_file=str(root / "configs" / "inference.json"),
            device="cpu",
            **{"_meta_#network_data_format#inputs#image#spatial_shape": spec["spatial_shape"]},
        )
        out_dir = Path(spec["output_dir"])
        wf = ConfigWorkflow(
            config_file=str(root / "configs" / "inference.json"),
            workflow_type="inference",
            logging_file=False,
            dataset_dir=spec["inputs"],
            output_dir=str(out_dir),
        )
        wf.initialize()
        problems = wf.check_properties()
        bundle_root = wf.parser.get_parsed_content("bundle_root")
        wf.run()
        wf.finalize()
        report["bundles"][name] = {
            "network_class": type(net).__name__,
            "weights_equal_model_pt": same,
            "bundle_root": str(bundle_root),
            "missing_properties": problems,
            "outputs": sorted(p.name for p in out_dir.iterdir()),
            "volumes": {p.name: _volume_info(p) for p in sorted(out_dir.glob("*.nii.gz"))},
        }
    import coseg

    report["coseg_file"] = coseg.__file__
    report["coseg_modules"] = sorted({m.__file__ for n, m in sys.modules.items() if n == "coseg"})
    Path(args["report"]).write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
