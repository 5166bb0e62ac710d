"""One-shot GPU check of the Co-Seg++ network (driven by ``benchmarks/gpu_check.sh``).

    python benchmarks/gpu_check.py OUT_DIR [--device cuda|cpu] [--quick]

Prints a short table and writes ``OUT_DIR/gpu_check.json``:

1. selective scan: the CUDA path (mamba_ssm's kernel when importable, else the PyTorch scan on the GPU) equals
   the CPU PyTorch scan (max relative error), and their times;
2. a bf16-autocast training step of the ``paper`` preset (1024², batch 2, frozen trunk as with SAM2 weights):
   finite loss and gradients, seconds per step, peak memory;
3. inference latency and throughput at 1024² for ``paper``, eager and ``torch.compile``d, bf16, and peak memory.

``--quick`` shrinks everything (``micro`` preset, 64², short scans) so that CI can run the script on a CPU with
``--device cpu --quick``. Installs nothing; needs no network.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from coseg.keys import DataKeys
from coseg.losses import CoSegLoss
from coseg.networks import CoSegPlusPlus
from coseg.ops import selective_scan, selective_scan_backend, selective_scan_torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def check_scan(device: torch.device, quick: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    b, d, n, length = (1, 16, 4, 256) if quick else (2, 256, 8, 4096)
    u = torch.randn(b, d, length, generator=g)
    delta = torch.rand(b, d, length, generator=g) * 0.1
    a = -torch.rand(d, n, generator=g) * 4 - 0.5
    bm, cm = torch.randn(b, n, length, generator=g), torch.randn(b, n, length, generator=g)
    dd, bias = torch.randn(d, generator=g), torch.randn(d, generator=g) * 0.1
    args = (u, delta, a, bm, cm, dd)
    kw = {"delta_bias": bias, "delta_softplus": True}
    ref = selective_scan_torch(*args, **kw)
    dev_args = tuple(t.to(device) for t in args)
    dev_kw = {"delta_bias": bias.to(device), "delta_softplus": True}
    out = selective_scan(*dev_args, **dev_kw).cpu()
    err = float((out - ref).abs().max() / ref.abs().max())
    return {
        "backend": selective_scan_backend(dev_args[0]),
        "shape": {"B": b, "D": d, "N": n, "L": length},
        "max_rel_error_vs_cpu": err,
        "ok": err < 1e-4,
        "device_ms": 1000 * _time(lambda: selective_scan(*dev_args, **dev_kw), device, 5),
        "cpu_torch_ms": 1000 * _time(lambda: selective_scan_torch(*args, **kw), torch.device("cpu"), 3),
    }


def _model(preset: str, device: torch.device) -> CoSegPlusPlus:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoSegPlusPlus.from_preset(preset, freeze_encoder=True).to(device)


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def check_training(device: torch.device, quick: bool) -> dict:
    preset, size, batch = ("micro", 64, 2) if quick else ("paper", 1024, 2)
    model = _model(preset, device).train()
    loss_fn = CoSegLoss()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    inst = torch.zeros(batch, 1, size, size, dtype=torch.long, device=device)
    inst[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1
    target = {
        DataKeys.LABEL_INST: inst,
        DataKeys.LABEL_TYPE: inst.clone(),
        DataKeys.LABEL_SEM: inst.clone(),
        DataKeys.LABEL_HV: torch.zeros(batch, 2, size, size, device=device),
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        with _autocast(device):
            pred = model(x)
        loss = loss_fn(pred, target)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    sec = _time(step, device, repeat=2 if quick else 3)
    grads_finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    return {
        "preset": preset,
        "image_size": size,
        "batch": batch,
        "dtype": "bf16 autocast" if device.type == "cuda" else "fp32",
        "loss": losses[-1],
        "ok": bool(all(map(lambda v: v == v and abs(v) != float("inf"), losses)) and grads_finite),
        "s_per_step": sec,
        "peak_memory_mb": _peak_mb(device),
    }


def check_inference(device: torch.device, quick: bool, compile_model: bool) -> dict:
    preset, size, batch = ("micro", 64, 2) if quick else ("paper", 1024, 4)
    model = _model(preset, device).eval()
    fn = torch.compile(model) if compile_model else model
    x1 = torch.randn(1, 3, size, size, device=device)
    xb = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def run(x):
        with torch.inference_mode(), _autocast(device):
            fn(x)

    t0 = time.perf_counter()
    run(x1)  # warm-up (compilation happens here)
    _sync(device)
    first = time.perf_counter() - t0
    latency = _time(lambda: run(x1), device, repeat=3 if quick else 10, warmup=1)
    batched = _time(lambda: run(xb), device, repeat=2 if quick else 5, warmup=1)
    return {
        "preset": preset,
        "image_size": size,
        "mode": "compiled" if compile_model else "eager",
        "first_call_s": first,
        "latency_ms": 1000 * latency,
        "throughput_images_per_s": batch / batched,
        "batch": batch,
        "peak_memory_mb": _peak_mb(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: CUDA is not available (use --device cpu --quick for a CPU smoke run)")
    res = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "quick": args.quick,
        "scan": check_scan(device, args.quick),
        "training": check_training(device, args.quick),
        "inference": [check_inference(device, args.quick, False)],
    }
    if not args.no_compile:
        try:
            res["inference"].append(check_inference(device, args.quick, True))
        except Exception as err:  # report a compile failure instead of losing the other figures
            res["inference"].append({"mode": "compiled", "error": f"{type(err).__name__}: {err}"[:500]})
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    s, t = res["scan"], res["training"]
    print(f"device: {res['device']}  torch {res['torch']}")
    print(
        f"scan [{s['backend']}] rel.err {s['max_rel_error_vs_cpu']:.2e} ok={s['ok']}  "
        f"{s['device_ms']:.1f} ms (cpu {s['cpu_torch_ms']:.1f} ms)"
    )
    print(
        f"train step {t['preset']} {t['image_size']}² b{t['batch']} {t['dtype']}: ok={t['ok']} "
        f"{t['s_per_step']:.3f} s/step peak {t['peak_memory_mb']} MB"
    )
    for r in res["inference"]:
        if "error" in r:
            print(f"inference {r['mode']}: FAILED {r['error']}")
            continue
        print(
            f"inference {r['preset']} {r['image_size']}² {r['mode']:8}: latency {r['latency_ms']:.1f} ms, "
            f"{r['throughput_images_per_s']:.2f} img/s (batch {r['batch']}), first call {r['first_call_s']:.1f} s, "
            f"peak {r['peak_memory_mb']} MB"
        )
    print(f"written {out / 'gpu_check.json'}")
    if not (s["ok"] and t["ok"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
