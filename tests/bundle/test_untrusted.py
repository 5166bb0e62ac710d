"""Files from elsewhere: checkpoints carrying pickled code are refused by every loading path, exports pack only
checked files from the bundle's ``models/``, and bundle zips whose members leave the bundle folder are refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from coseg.bundle import check_bundle_zip, export_bundle, extract_bundle
from coseg.errors import InputFileError, InputNotFoundError

from .conftest import MICRO_OVERRIDES, REPO


class _Payload:
    """Unpickling this runs code: it writes ``marker`` (what a malicious checkpoint would do with a shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _malicious(path: Path, marker: Path, *, wrap: bool = False) -> Path:
    """A checkpoint that looks like a state dict but carries :class:`_Payload`."""
    state = {"weight": torch.zeros(2), "payload": _Payload(marker)}
    torch.save({"model": state} if wrap else state, path)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "pwned.txt"


def test_the_malicious_checkpoint_really_runs_code_when_unpickled(tmp_path, marker):
    """The control: without ``weights_only=True`` the payload runs (so the refusals below mean something)."""
    path = _malicious(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)  # unsafe on purpose
    assert marker.read_text() == "code ran"


def test_every_torch_load_is_weights_only():
    """In the package, the tests, the benchmarks and the integrations (the control above is the one exception)."""
    sources = [
        p
        for folder in ("shared", "tests", "benchmarks", "integrations")
        for p in (REPO / folder).rglob("*.py")
        if not {".venv", "site-packages"} & set(p.relative_to(REPO).parts)  # our files, not installed packages
    ]
    assert len(sources) > 100
    for source in sources:
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if "torch.load" + "(" in line and "unsafe on purpose" not in line:
                assert "weights_only=True" in line, f"{source}:{number}: {line.strip()}"


def test_export_refuses_a_malicious_model(source_bundle, tmp_path, marker):
    bundle = tmp_path / "coseg_histo"
    shutil.copytree(source_bundle, bundle)
    _malicious(bundle / "models" / "model.pt", marker)
    with pytest.raises(InputFileError, match="weights_only=True"):
        export_bundle(bundle, tmp_path / "dist")
    assert not marker.exists() and not list((tmp_path / "dist").glob("*"))


def test_export_refuses_a_malicious_extra_model_file(source_bundle, tmp_path, marker):
    """Extra files of ``models/`` were packed unchecked."""
    _malicious(tmp_path / "extra.pt", marker)
    bundle = tmp_path / "coseg_histo"
    shutil.copytree(source_bundle, bundle)
    shutil.copy(tmp_path / "extra.pt", bundle / "models" / "extra.pt")
    with pytest.raises(InputFileError, match="extra.pt: cannot be loaded with torch.load"):
        export_bundle(bundle, tmp_path / "dist", models=["model.pt", "extra.pt"])
    assert not marker.exists()


def test_the_sam2_weights_loader_refuses_a_malicious_checkpoint(tmp_path, marker):
    from coseg.networks import CoSegPlusPlus
    from coseg.networks.weights import SAM2CheckpointError, load_sam2_weights

    path = _malicious(tmp_path / "sam2.pt", marker, wrap=True)
    net = CoSegPlusPlus.from_preset("micro", num_sem_classes=3, num_inst_types=4, freeze_encoder=False)
    with pytest.raises(SAM2CheckpointError, match="cannot be read"):
        load_sam2_weights(net.image_encoder, path)
    assert not marker.exists()


def test_the_whole_slide_checkpoint_loader_refuses_a_malicious_checkpoint(tmp_path, marker):
    from coseg.networks import CoSegPlusPlus
    from coseg.wsi import load_network_weights

    net = CoSegPlusPlus.from_preset("micro", num_sem_classes=3, num_inst_types=4, freeze_encoder=False)
    path = _malicious(tmp_path / "model.pt", marker)
    with pytest.raises(InputFileError, match="cannot load the network weights"):
        load_network_weights(net, path, device="cpu")
    assert not marker.exists()


def test_the_bundles_checkpoint_loader_refuses_a_malicious_checkpoint(tmp_path, marker):
    """``CheckpointLoader`` of the bundles' inference and evaluation configs (MONAI's, ``weights_only=True``)."""
    from ignite.engine import Engine
    from monai.handlers import CheckpointLoader

    from coseg.networks import CoSegPlusPlus

    net = CoSegPlusPlus.from_preset("micro", num_sem_classes=3, num_inst_types=4, freeze_encoder=False)
    path = _malicious(tmp_path / "model.pt", marker, wrap=True)
    engine = Engine(lambda e, b: None)
    CheckpointLoader(load_path=str(path), load_dict={"model": net}, map_location="cpu").attach(engine)
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):
        engine.run([0], max_epochs=1)
    assert not marker.exists()


def test_the_attention_experiment_refuses_a_malicious_checkpoint(tmp_path, marker):
    from coseg.experiments.attention import load_network

    path = _malicious(tmp_path / "model.pt", marker, wrap=True)
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):
        load_network(REPO / "bundles" / "coseg_histo", path, overrides=MICRO_OVERRIDES, device="cpu")
    assert not marker.exists()


# ---- export: only checked files of models/ -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, message",
    [
        ("/etc/hostname", "not an absolute path"),
        ("../LICENSE", "not inside the bundle's models folder"),
        ("sub/../../configs/metadata.json", "not inside the bundle's models folder"),
        ("outside_link.pt", "not inside the bundle's models folder"),
        ("missing.pt", "does not exist"),
        ("folder", "not a regular file"),
        ("", "give model files by their name"),
    ],
)
def test_export_refuses_model_files_outside_models_or_missing(source_bundle, tmp_path, name, message):
    bundle = tmp_path / "coseg_histo"
    shutil.copytree(source_bundle, bundle)
    (bundle / "models" / "folder").mkdir()
    (tmp_path / "outside.pt").write_bytes((bundle / "models" / "model.pt").read_bytes())
    (bundle / "models" / "outside_link.pt").symlink_to(tmp_path / "outside.pt")
    with pytest.raises(InputFileError, match=message) as caught:
        export_bundle(bundle, tmp_path / "dist", models=[name])
    assert not isinstance(caught.value, InputNotFoundError) or message == "does not exist"
    assert not list((tmp_path / "dist").glob("*"))


def test_export_packs_nested_model_files_under_their_own_path(source_bundle, tmp_path):
    bundle = tmp_path / "coseg_histo"
    shutil.copytree(source_bundle, bundle)
    (bundle / "models" / "fold1").mkdir()
    torch.save({"w": torch.ones(1)}, bundle / "models" / "fold1" / "model.pt")
    (bundle / "models" / "notes.txt").write_text("trained on ...", encoding="utf-8")
    out = export_bundle(bundle, tmp_path / "dist", models=["model.pt", "fold1/model.pt", "notes.txt"])
    with zipfile.ZipFile(out) as zf:
        models = sorted(n for n in zf.namelist() if n.startswith("coseg_histo/models/"))
    assert models == [f"coseg_histo/models/{n}" for n in ("fold1/model.pt", "model.pt", "notes.txt")]


def test_the_command_line_refuses_an_absolute_model_path_in_one_line(source_bundle, tmp_path):
    args = ["export", str(source_bundle), str(tmp_path / "dist"), "--models", "/etc/hostname"]
    res = subprocess.run(
        [sys.executable, "-m", "coseg.bundle", *args], capture_output=True, text=True, encoding="utf-8", timeout=300
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: /etc/hostname: give model files by their name under {(source_bundle / 'models').resolve()}, "
        "not an absolute path"
    )


# ---- bundle zips from elsewhere ----------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes], *, links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 if name in links else 0o100644) << 16  # st_mode in the high 16 bits
            zf.writestr(info, data)
    return path


_GOOD = {"coseg_histo/configs/metadata.json": b"{}", "coseg_histo/LICENSE": b"licence"}


@pytest.mark.parametrize(
    "members, links, problem",
    [
        ({**_GOOD, "coseg_histo/../../escaped.txt": b"x"}, (), "climbs out of the bundle folder"),
        ({**_GOOD, "/tmp/escaped.txt": b"x"}, (), "absolute or Windows path"),
        ({**_GOOD, "C:/escaped.txt": b"x"}, (), "absolute or Windows path"),
        ({**_GOOD, "coseg_histo\\..\\..\\escaped.txt": b"x"}, (), "absolute or Windows path"),
        ({**_GOOD, "coseg_histo/models/link": b"/etc/passwd"}, ("coseg_histo/models/link",), "symbolic link"),
        ({**_GOOD, "other/LICENSE": b"x"}, (), "one top folder"),
        ({**_GOOD, "README.md": b"x"}, (), "outside the bundle's top folder"),
    ],
    ids=["dotdot", "absolute", "drive", "backslash", "symlink", "two-tops", "top-level-file"],
)
def test_bundle_zips_with_escaping_members_are_refused_before_writing(tmp_path, members, links, problem):
    archive = _zip(tmp_path / "coseg_histo_v0.1.0.zip", members, links=links)
    dest = tmp_path / "work" / "model"
    with pytest.raises(InputFileError, match=problem):
        extract_bundle(archive, dest)
    assert not (dest / "coseg_histo").exists() and not list(tmp_path.rglob("escaped.txt"))


def test_a_good_bundle_zip_is_extracted_whole(tmp_path):
    archive = _zip(tmp_path / "b.zip", {**_GOOD, "coseg_histo/models/": b""})
    assert check_bundle_zip(archive) == "coseg_histo"
    target = extract_bundle(archive, tmp_path / "model")
    assert target == (tmp_path / "model" / "coseg_histo").resolve()
    assert (target / "LICENSE").read_bytes() == b"licence" and (target / "models").is_dir()
    with pytest.raises(InputFileError, match="exists already"):
        extract_bundle(archive, tmp_path / "model")
    with pytest.raises(InputFileError, match="cannot be read as a zip"):
        extract_bundle(tmp_path / "model" / "coseg_histo" / "LICENSE", tmp_path / "other")


def test_an_exported_bundle_passes_the_zip_check(source_bundle, tmp_path):
    exported = export_bundle(source_bundle, tmp_path, models=[], overrides=MICRO_OVERRIDES)
    assert check_bundle_zip(exported) == "coseg_histo"


def test_what_monai_bundle_download_does_with_traversing_zips(tmp_path):
    """MONAI 1.6.1's own extraction (``monai.apps.utils.safe_extract_member``) refuses a member that leaves the
    download folder, but only when it reaches it (the members before it are written already), and it accepts one
    that leaves the bundle folder but stays in the download folder. :func:`extract_bundle` refuses both up front."""
    import monai.bundle

    escaping = _zip(tmp_path / "coseg_histo.zip", {**_GOOD, "coseg_histo/../../escaped.txt": b"x"})
    dest = tmp_path / "bundles"
    with pytest.raises(ValueError, match="Unsafe path"):
        monai.bundle.download(name="coseg_histo", url=escaping.as_uri(), bundle_dir=str(dest), progress=False)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert (dest / "coseg_histo" / "LICENSE").is_file()  # written before the offending member was reached

    (tmp_path / "zips").mkdir()
    sibling = _zip(tmp_path / "zips" / "coseg_histo.zip", {**_GOOD, "coseg_histo/../sibling.txt": b"x"})
    other = tmp_path / "other"
    monai.bundle.download(name="coseg_histo", url=sibling.as_uri(), bundle_dir=str(other), progress=False)
    assert (other / "sibling.txt").read_bytes() == b"x"  # beside the bundle folder, not in it
    with pytest.raises(InputFileError, match="climbs out of the bundle folder"):
        check_bundle_zip(sibling)
