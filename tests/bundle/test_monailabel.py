"""MONAI Label 0.8.5 end to end: a real server with its ``monaibundle`` sample app serving both packaged bundles,
coseg_histo (2D) and coseg_cbct (3D), on one studies folder; and a second one serving coseg_cbct alone on three
labelled volumes, trained through ``/train`` (MONAI Label trains a bundle on every labelled study of its datastore,
so 3D training gets a folder without 2D studies).

Needs MONAI Label's own virtual environment (``integrations/monailabel/setup_venv.sh``; ``COSEG_MONAILABEL_VENV``
names another one). Marked ``integration``: deselected by default, run by ``.ci/run`` with
``COSEG_REQUIRE_MONAILABEL=1``, which turns a missing environment into a failure instead of a skip.

The histology studies are 48x64 (non-square) synthetic H&E images, so that a transposed or resized label cannot
pass; the CBCT study is a 44x54x20 phantom cropped off-centre with an LPS affine, so that a transposed, flipped or
misplaced label volume cannot pass either. A bounded soak (249 /infer requests, 24 of them from 4 threads at once,
and malformed uploads) checks that nothing fails and the server's memory stays flat; it writes its numbers to
``soak.json`` in the test's work folder.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from coseg.bundle import TOOTHFAIRY2_PRED_IDS, export_bundle, extract_bundle
from coseg.data.label_codec import encode_class_map

from .conftest import CBCT, CBCT_MICRO_OVERRIDES, MICRO_OVERRIDES, REPO, make_source_bundle, write_cbct_volumes

pytestmark = pytest.mark.integration

VENV = Path(os.environ.get("COSEG_MONAILABEL_VENV", REPO / "integrations" / "monailabel" / ".venv"))
HEIGHT, WIDTH = 48, 64
NUM_STUDIES, NUM_LABELLED = 5, 4
NUM_CLASSES = 6  # background, tumour, stroma + 3 nucleus types


def _require_venv() -> None:
    if not (VENV / "bin" / "monailabel").is_file():
        message = f"no MONAI Label environment at {VENV}: run integrations/monailabel/setup_venv.sh"
        if os.environ.get("COSEG_REQUIRE_MONAILABEL") == "1":
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}


def _request(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None, timeout=120):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.headers.get("content-type", ""), resp.read()


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _confident_cbct_bundle(dest: Path) -> Path:
    """A coseg_cbct source bundle whose seeded, untrained micro model decides confidently: the 1x1 output
    convolutions of its decoder heads are scaled by 20 and their biases zeroed. Its labels then follow the scan's
    intensities (several regions and teeth on the phantom) instead of one class everywhere, so that comparing label
    volumes can catch a flip or a shift."""
    bundle = make_source_bundle(dest, bundle=CBCT)
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    for head in ("sem", "inst"):
        weight, bias = f"decoder.heads.{head}.conv_s0.weight", f"decoder.heads.{head}.conv_s0.bias"
        assert weight in state and bias in state, f"the micro model has no {weight}: update this test"
        state[weight] *= 20.0
        state[bias].zero_()
    torch.save(state, bundle / "models" / "model.pt")
    return bundle


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, source_bundle, sample_images):
    """The monaibundle app with both exported bundles in its model folder, studies (histology images and a CBCT
    volume), and per-study class-map labels for the histology images."""
    _require_venv()
    work = tmp_path_factory.mktemp("monailabel")
    subprocess.run(
        ["monailabel", "apps", "--download", "--name", "monaibundle", "--output", str(work / "apps")],
        env=_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    app = work / "apps" / "monaibundle"
    bundle = extract_bundle(export_bundle(source_bundle, work / "dist", overrides=MICRO_OVERRIDES), app / "model")
    shutil.copy(bundle / "models" / "model.pt", work / "initial_model.pt")
    cbct_source = _confident_cbct_bundle(work / "cbct_source" / "coseg_cbct")
    extract_bundle(export_bundle(cbct_source, work / "dist", overrides=CBCT_MICRO_OVERRIDES), app / "model")

    studies = work / "studies"
    studies.mkdir()
    datalist = json.loads((sample_images / "datalist.json").read_text(encoding="utf-8"))
    items = [*datalist["training"], *datalist["validation"], *datalist["test"]][:NUM_STUDIES]
    labels = {}
    for item in items:
        name = Path(item["image"]).stem
        image = np.asarray(Image.open(sample_images / item["image"]))[:HEIGHT, :WIDTH]
        Image.fromarray(image).save(studies / f"{name}.png")
        maps = [np.asarray(Image.open(sample_images / item[k]))[:HEIGHT, :WIDTH] for k in ("label_sem", "label_inst")]
        types = np.asarray(Image.open(sample_images / item["label_type"]))[:HEIGHT, :WIDTH]
        labels[name] = encode_class_map(maps[0], maps[1], types, num_sem_classes=3)
    volumes = write_cbct_volumes(studies, seeds=(0,))
    return {
        "work": work,
        "app": app,
        "bundle": bundle,
        "cbct_bundle": app / "model" / "coseg_cbct",
        "studies": studies,
        "labels": labels,
        "volumes": volumes,
    }


def _serve(app: Path, studies: Path, models: str, log_path: Path):
    """``monailabel start_server`` of ``app`` on ``studies`` serving ``models`` on 127.0.0.1 (offline: zoo_source
    github, no SAM2); yields its URL, then stops it with its children."""
    port = _free_port()
    log = log_path.open("w")
    cmd = [
        "monailabel",
        "start_server",
        "--app",
        str(app),
        "--studies",
        str(studies),
        "--conf",
        "models",
        models,
        "--conf",
        "zoo_source",
        "github",
        "--conf",
        "sam2",
        "false",
        "--conf",
        "preload",
        "false",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                _request(f"{url}/info/", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("MONAI Label did not start:\n" + log_path.read_text(encoding="utf-8")[-6000:])
                time.sleep(2)
        deployment["server_pid"] = proc.pid  # bin/monailabel execs the Python process that serves
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def server(deployment):
    """The server of :func:`deployment` serving both bundles."""
    yield from _serve(
        deployment["app"], deployment["studies"], "coseg_histo,coseg_cbct", deployment["work"] / "server.log"
    )


def _server_log(deployment) -> str:
    return (deployment["work"] / "server.log").read_text(encoding="utf-8")[-6000:]


def test_server_lists_the_bundles_with_their_classes(server, deployment):
    _, _, body = _request(f"{server}/info/")
    info = json.loads(body)
    model = info["models"]["coseg_histo"]
    assert model["dimension"] == 2
    assert model["labels"] == {"tumour": 1, "stroma": 2, "tumour nucleus": 3, "til nucleus": 4, "other nucleus": 5}
    assert "coseg_histo" in info["trainers"]
    cbct = info["models"]["coseg_cbct"]
    assert cbct["dimension"] == 3
    channel_def = json.loads((CBCT / "configs" / "metadata.json").read_text(encoding="utf-8"))["network_data_format"][
        "outputs"
    ]["pred"]["channel_def"]
    assert cbct["labels"] == {v.lower(): int(k) for k, v in channel_def.items() if k != "0"}
    assert cbct["labels"]["pharynx"] == 7 and cbct["labels"]["lower left first molar"] == 36


def _reference(deployment, bundle: Path, weights: Path, out: Path) -> None:
    """``inference.json`` of a packaged bundle through ``ConfigWorkflow`` in MONAI Label's environment (same torch),
    on the studies folder and the given weights: what a user gets without MONAI Label."""
    script = (
        "import sys, warnings; warnings.simplefilter('ignore'); sys.path.insert(0, sys.argv[1]);"
        "from monai.bundle import ConfigWorkflow;"
        "wf = ConfigWorkflow(config_file=sys.argv[1] + '/configs/inference.json', workflow_type='inference',"
        " logging_file=False, dataset_dir=sys.argv[2], output_dir=sys.argv[3], ckpt_path=sys.argv[4]);"
        "wf.initialize(); wf.run(); wf.finalize()"
    )
    args = [bundle, deployment["studies"], out, weights]
    proc = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", script, *map(str, args)],
        env=_env(),
        cwd=deployment["work"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def reference_pred(deployment):
    """The ``<name>_pred.png`` class maps of the histology bundle's own inference on the initial weights."""
    out = deployment["work"] / "reference"
    _reference(deployment, deployment["bundle"], deployment["work"] / "initial_model.pt", out)
    return {p.name.removesuffix("_pred.png"): np.asarray(Image.open(p)) for p in out.glob("*_pred.png")}


@pytest.fixture(scope="module")
def reference_cbct(deployment):
    """The ``<case>_toothfairy2.nii.gz`` label volumes of the CBCT bundle's own inference (written on the input's
    grid by ``DentalInferenceWriter``, whose affine handling ``tests/bundles/test_cbct_bundle.py`` checks)."""
    out = deployment["work"] / "reference_cbct"
    bundle = deployment["cbct_bundle"]
    _reference(deployment, bundle, bundle / "models" / "model.pt", out)
    return {p.name.removesuffix("_toothfairy2.nii.gz"): p for p in out.glob("*_toothfairy2.nii.gz")}


def test_infer_returns_the_bundle_class_map(server, deployment, reference_pred):
    for name in sorted(reference_pred)[:2]:
        status, ctype, body = _request(f"{server}/infer/coseg_histo?image={name}&output=image", method="POST")
        assert status == 200 and "png" in ctype, (ctype, _server_log(deployment))
        path = deployment["work"] / f"infer_{name}.png"
        path.write_bytes(body)
        label = np.asarray(Image.open(path))
        assert label.shape == (HEIGHT, WIDTH), f"label shape {label.shape}, image {(HEIGHT, WIDTH)}"
        assert set(np.unique(label)) <= set(range(NUM_CLASSES))
        assert np.array_equal(label, reference_pred[name]), "MONAI Label's label differs from the bundle's own pred"


def test_infer_returns_the_cbct_label_volume_on_the_input_grid(server, deployment, reference_cbct):
    source = deployment["volumes"][0]
    case = source.name.removesuffix(".nii.gz")
    reference = np.asarray(nib.load(reference_cbct[case]).dataobj)
    # the comparison below can fail: the bundle's own label volume is neither uniform nor symmetric
    assert len(np.unique(reference)) >= 3
    assert not any(np.array_equal(reference, np.flip(reference, axis)) for axis in range(3))

    status, _, body = _request(f"{server}/infer/coseg_cbct?image={case}&output=image", method="POST", timeout=300)
    assert status == 200, _server_log(deployment)
    path = deployment["work"] / (f"infer_{case}.nii" + (".gz" if body[:2] == b"\x1f\x8b" else ""))
    path.write_bytes(body)
    label, image = nib.load(path), nib.load(source)
    assert label.shape == image.shape, f"label {label.shape}, image {image.shape}"
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
    assert nib.aff2axcodes(label.affine) == nib.aff2axcodes(image.affine) == ("L", "P", "S")
    values = np.asarray(label.dataobj)
    assert set(np.unique(values).tolist()) <= set(TOOTHFAIRY2_PRED_IDS)
    assert np.array_equal(values, reference), "MONAI Label's label volume differs from the bundle's own"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


#: the soak: requests to warm up, then sequential ones, then concurrent ones (threads x requests each)
SOAK_WARMUP, SOAK_SEQUENTIAL, SOAK_THREADS, SOAK_PER_THREAD = 20, 200, 4, 6


def test_the_server_serves_hundreds_of_requests_without_failing_or_growing(server, deployment):
    """Bounded load on 127.0.0.1: every request succeeds with the same label, the server's resident memory grows by
    less than 10 % after warm-up, and malformed uploads leave it serving. The measured numbers go to soak.json."""
    pid = deployment["server_pid"]
    names = sorted(deployment["labels"])
    url = f"{server}/infer/coseg_histo?image={{}}&output=image"
    expected: dict[str, bytes] = {}
    failures: list[str] = []

    def infer(name: str) -> None:
        try:
            status, ctype, body = _request(url.format(name), method="POST", timeout=120)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            failures.append(f"{name}: {err}")
            return
        label = np.asarray(Image.open(io.BytesIO(body)))
        if status != 200 or "png" not in ctype or label.shape != (HEIGHT, WIDTH):
            failures.append(f"{name}: status {status}, {ctype}, shape {label.shape}")
        elif expected.setdefault(name, label.tobytes()) != label.tobytes():
            failures.append(f"{name}: the label differs from the first one")

    for i in range(SOAK_WARMUP):
        infer(names[i % len(names)])
    rss_warm = _rss_kib(pid)
    start = time.monotonic()
    for i in range(SOAK_SEQUENTIAL):
        infer(names[i % len(names)])
    sequential_s = time.monotonic() - start
    rss_sequential = _rss_kib(pid)
    start = time.monotonic()
    with ThreadPoolExecutor(SOAK_THREADS) as pool:
        jobs = [
            pool.submit(infer, names[(t + i) % len(names)]) for t in range(SOAK_THREADS) for i in range(SOAK_PER_THREAD)
        ]
        for job in jobs:
            job.result()
    concurrent_s = time.monotonic() - start
    rss_concurrent = _rss_kib(pid)

    malformed = {}
    body, ctype = _multipart({"params": "{}"}, {"file": ("broken.png", b"\x89PNG\r\n\x1a\n not an image")})
    malformed["not an image"] = _status(f"{server}/infer/coseg_histo", "POST", body, {"Content-Type": ctype})
    body, ctype = _multipart(
        {"params": "{}"}, {"file": ("cut.png", _png_bytes(np.zeros((HEIGHT, WIDTH, 3), np.uint8)))}
    )
    malformed["cut multipart"] = _status(
        f"{server}/infer/coseg_histo", "POST", body[: len(body) // 2], {"Content-Type": ctype}
    )
    malformed["bad params"] = _status(f"{server}/infer/coseg_histo?image={names[0]}", "POST", b"params={", {})
    for i in range(len(names)):
        infer(names[i])
    status, _, _ = _request(f"{server}/info/")
    rss_end = _rss_kib(pid)

    numbers = {
        "requests": SOAK_WARMUP + SOAK_SEQUENTIAL + SOAK_THREADS * SOAK_PER_THREAD + len(names),
        "failures": len(failures),
        "sequential_s_per_request": round(sequential_s / SOAK_SEQUENTIAL, 3),
        "concurrent_s": round(concurrent_s, 1),
        "rss_mib": {
            k: round(v / 1024, 1)
            for k, v in {
                "warm": rss_warm,
                "sequential": rss_sequential,
                "concurrent": rss_concurrent,
                "end": rss_end,
            }.items()
        },
        "growth_after_warmup": round(max(rss_sequential, rss_concurrent, rss_end) / rss_warm - 1, 4),
        "malformed_status": malformed,
    }
    (deployment["work"] / "soak.json").write_text(json.dumps(numbers, indent=2), encoding="utf-8")
    print("MONAI Label soak:", json.dumps(numbers))
    assert not failures, failures[:10]
    assert status == 200
    assert all(400 <= s < 600 for s in malformed.values()), malformed
    assert numbers["growth_after_warmup"] < 0.10, numbers


def _status(url: str, method: str, data: bytes, headers: dict) -> int:
    try:
        return _request(url, method, data, headers, timeout=120)[0]
    except urllib.error.HTTPError as err:
        return err.code


def test_training_through_the_server_writes_a_checkpoint(server, deployment):
    for name, label in list(deployment["labels"].items())[:NUM_LABELLED]:
        body, ctype = _multipart({"params": "{}"}, {"label": (f"{name}.png", _png_bytes(label))})
        query = urllib.parse.urlencode({"image": name, "tag": "final"})
        status, _, _ = _request(f"{server}/datastore/label?{query}", "PUT", body, {"Content-Type": ctype})
        assert status == 200
    _, _, body = _request(f"{server}/datastore/?output=stats")
    assert json.loads(body)["completed"] == NUM_LABELLED

    models = deployment["bundle"] / "models"
    before = (models / "model.pt").stat().st_mtime_ns
    params = {"max_epochs": 2, "val_split": 0.25, "multi_gpu": False, "device": "cpu", "pretrained": True}
    headers = {"Content-Type": "application/json"}
    _request(f"{server}/train/coseg_histo", "POST", json.dumps(params).encode(), headers)
    deadline = time.monotonic() + 600
    while True:
        _, _, body = _request(f"{server}/train/")
        task = json.loads(body)
        if task.get("status") not in ("SUBMITTED", "QUEUED", "RUNNING"):
            break
        assert time.monotonic() < deadline, "training through MONAI Label did not finish in 10 minutes"
        time.sleep(3)
    details = "\n".join(task.get("details", []))[-6000:]
    assert task.get("status") == "DONE", details + _server_log(deployment)

    final = torch.load(models / "checkpoint_final.pt", weights_only=True)
    assert set(final) == {"model", "optimizer", "lr_scheduler", "trainer", "best_model", "rng", "run"}
    # 3 of the 4 labelled images train (val_split 0.25), batch 2: 2 iterations per epoch, 2 epochs
    assert final["trainer"]["max_epochs"] == 2
    assert final["trainer"]["epoch_length"] == 2 and final["trainer"]["iteration"] == 4
    assert (models / "model.pt").stat().st_mtime_ns != before, "no best-metric model.pt after validation"


def _train(url: str, model: str, params: dict, log: Path, timeout: float = 600) -> dict:
    """``POST /train/<model>`` and wait for the task to end; returns MONAI Label's task record."""
    _request(f"{url}/train/{model}", "POST", json.dumps(params).encode(), {"Content-Type": "application/json"})
    deadline = time.monotonic() + timeout
    while True:
        _, _, body = _request(f"{url}/train/")
        task = json.loads(body)
        if task.get("status") not in ("SUBMITTED", "QUEUED", "RUNNING"):
            return task
        assert time.monotonic() < deadline, f"training {model} did not end in {timeout} s:\n" + log.read_text()[-4000:]
        time.sleep(3)


@pytest.fixture(scope="module")
def cbct_training(tmp_path_factory):
    """A monaibundle app serving only coseg_cbct (MONAI Label trains a bundle on every labelled study, so 2D studies
    stay out) on three phantom volumes, with their label volumes in ToothFairy2 ids beside the app."""
    _require_venv()
    work = tmp_path_factory.mktemp("monailabel_cbct")
    subprocess.run(
        ["monailabel", "apps", "--download", "--name", "monaibundle", "--output", str(work / "apps")],
        env=_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    app = work / "apps" / "monaibundle"
    source = _confident_cbct_bundle(work / "cbct_source" / "coseg_cbct")
    # a learning rate that moves the micro model's labels within one short epoch
    overrides = {**CBCT_MICRO_OVERRIDES, "learning_rate": 0.01}
    extract_bundle(export_bundle(source, work / "dist", overrides=overrides), app / "model")
    studies = work / "studies"
    volumes = write_cbct_volumes(studies, seeds=(0, 1, 2), labels=work / "labels")
    bundle = app / "model" / "coseg_cbct"
    shutil.copy(bundle / "models" / "model.pt", work / "initial_model.pt")
    return {"work": work, "app": app, "studies": studies, "volumes": volumes, "bundle": bundle}


@pytest.fixture(scope="module")
def cbct_server(cbct_training):
    yield from _serve(
        cbct_training["app"], cbct_training["studies"], "coseg_cbct", cbct_training["work"] / "server.log"
    )


def _infer_cbct(url: str, case: str, dest: Path) -> np.ndarray:
    status, _, body = _request(f"{url}/infer/coseg_cbct?image={case}&output=image", method="POST", timeout=300)
    assert status == 200
    path = dest / (f"{case}.nii" + (".gz" if body[:2] == b"\x1f\x8b" else ""))
    path.write_bytes(body)
    return np.asarray(nib.load(path).dataobj)


def test_cbct_trains_from_label_volumes_and_infers_with_the_new_checkpoint(cbct_server, cbct_training):
    """The MONAI Label loop for CBCT: label volumes saved through ``/datastore/label``, ``/train/coseg_cbct`` (the
    bundle slices them on the fly), a checkpoint written, and ``/infer`` answering with the new weights."""
    from coseg.dental.volume_slices import VolumeSliceDataset

    work, bundle, volumes = cbct_training["work"], cbct_training["bundle"], cbct_training["volumes"]
    log = work / "server.log"
    case = volumes[0].name.removesuffix(".nii.gz")
    (work / "before").mkdir()
    before = _infer_cbct(cbct_server, case, work / "before")
    for volume in volumes:
        name = volume.name.removesuffix(".nii.gz")
        label = (work / "labels" / volume.name).read_bytes()
        body, ctype = _multipart({"params": "{}"}, {"label": (volume.name, label)})
        query = urllib.parse.urlencode({"image": name, "tag": "final"})
        status, _, _ = _request(f"{cbct_server}/datastore/label?{query}", "PUT", body, {"Content-Type": ctype})
        assert status == 200
    _, _, body = _request(f"{cbct_server}/datastore/?output=stats")
    assert json.loads(body)["completed"] == len(volumes)

    models = bundle / "models"
    model_mtime = (models / "model.pt").stat().st_mtime_ns
    params = {"max_epochs": 1, "val_split": 0.34, "multi_gpu": False, "device": "cpu", "pretrained": True}
    task = _train(cbct_server, "coseg_cbct", params, log)
    assert task.get("status") == "DONE", "\n".join(task.get("details", []))[-6000:] + log.read_text()[-4000:]

    # 2 of the 3 volumes train (val_split 0.34); every axial slice of these crops holds a region or a tooth, so each
    # volume gives its 20 slices whatever volume_empty_fraction is: 40 slices, batch 2
    pairs = [{"image": str(v), "label": str(work / "labels" / v.name)} for v in volumes]
    assert len(VolumeSliceDataset(pairs, size=64, empty_fraction=0.0)) == 3 * 20
    final = torch.load(models / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["max_epochs"] == 1
    assert final["trainer"]["epoch_length"] == 20 and final["trainer"]["iteration"] == 20
    assert (models / "model.pt").stat().st_mtime_ns != model_mtime, "no best-metric model.pt after validation"

    trained = torch.load(models / "model.pt", weights_only=True)
    initial = torch.load(work / "initial_model.pt", weights_only=True)
    assert any(
        not torch.equal(trained["model"][k] if "model" in trained else trained[k], v) for k, v in initial.items()
    )
    (work / "after").mkdir()
    after = _infer_cbct(cbct_server, case, work / "after")
    reference = work / "reference_trained"
    _reference(cbct_training, bundle, models / "model.pt", reference)
    expected = np.asarray(nib.load(reference / f"{case}_toothfairy2.nii.gz").dataobj)
    assert np.array_equal(after, expected), "MONAI Label's label volume differs from the new weights' own"
    assert not np.array_equal(after, before), "the label volume did not change: /infer may still use the old weights"
