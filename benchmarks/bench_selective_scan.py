"""Benchmark of ``coseg.ops.selective_scan``: chunked PyTorch scan vs the per-step loop (vs mamba_ssm on CUDA).

Run ``python benchmarks/bench_selective_scan.py`` from the repository root (about a minute on 2 CPU cores). It measures,
side by side in one run, at dim 256, dstate 8, length 4096, float32, batch 1 and 2:

- forward (no grad) and forward + backward (gradients of all eight inputs) of ``selective_scan_torch`` and
  ``selective_scan_loop``, runs of the two interleaved so that both see the same machine load;
- a chunk-size sweep of ``selective_scan_torch`` at lengths 1024, 4096 and 16384 (the basis of
  ``default_chunk_size``);
- peak extra resident memory of forward + backward at batch 1, each in a fresh subprocess;
- accuracy against ``../shared/fixtures/selective_scan_ref.pt`` (outputs of mamba_ssm's kernel) when present, and
  against a float64 run of the loop;
- on CUDA, when available: the same timings on the GPU, plus mamba_ssm's kernel when it imports.

Inputs follow Mamba's initialisation: ``A[d, n] = -(n + 1)``, ``delta_bias`` the inverse softplus of step sizes
log-uniform in [0.001, 0.1], ``delta`` the standard normal times 0.5, ``B``, ``C``, ``u``, ``z`` standard normal,
``D`` ones, ``delta_softplus=True``. A second input set with strong decays (``|A|`` log-uniform in [0.05, 60], as in the
fixture) shows the cost of subnormal ``exp`` results in the loop. Results go to ``benchmarks/results/
selective_scan.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from coseg.ops import (
    default_chunk_size,
    mamba_kernel_available,
    selective_scan,
    selective_scan_loop,
    selective_scan_torch,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "selective_scan.json"
FIXTURE = REPO_ROOT.parent / "shared" / "fixtures" / "selective_scan_ref.pt"
DIM, DSTATE, LENGTH = 256, 8, 4096
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(
    batch: int,
    length: int = LENGTH,
    dim: int = DIM,
    dstate: int = DSTATE,
    strong_decay: bool = False,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Mamba-like float32 scan inputs (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    def log_uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return torch.exp(torch.empty(*shape).uniform_(math.log(low), math.log(high), generator=gen))

    if strong_decay:
        A = -log_uniform(0.05, 60.0, dim, dstate)
    else:
        A = -torch.arange(1, dstate + 1, dtype=torch.float32).repeat(dim, 1)
    step = log_uniform(1e-3, 1e-1, dim)
    inputs = {
        "u": randn(batch, dim, length),
        "delta": 0.5 * randn(batch, dim, length),
        "A": A,
        "B": randn(batch, dstate, length),
        "C": randn(batch, dstate, length),
        "D": torch.ones(dim),
        "z": randn(batch, dim, length),
        "delta_bias": step + torch.log(-torch.expm1(-step)),  # inverse softplus
    }
    return {k: v.to(device) for k, v in inputs.items()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_once(fn: Callable, inputs: dict[str, torch.Tensor], backward: bool, **kwargs) -> None:
    """One forward (under no_grad) or forward + backward through all inputs."""
    if backward:
        leaves = {k: v.detach().requires_grad_(True) for k, v in inputs.items()}
        fn(**leaves, delta_softplus=True, **kwargs).sum().backward()
    else:
        with torch.no_grad():
            fn(**inputs, delta_softplus=True, **kwargs)


def time_interleaved(
    candidates: dict[str, tuple[Callable, dict]], inputs: dict[str, torch.Tensor], backward: bool, repeats: int
) -> dict[str, dict[str, float]]:
    """Wall-clock seconds of each candidate, runs interleaved round-robin after one warm-up each."""
    device = str(inputs["u"].device)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for fn, kwargs in candidates.values():
        run_once(fn, inputs, backward, **kwargs)
    for _ in range(repeats):
        for name, (fn, kwargs) in candidates.items():
            _sync(device)
            start = time.perf_counter()
            run_once(fn, inputs, backward, **kwargs)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: {"min_s": min(ts), "median_s": statistics.median(ts)} for name, ts in times.items()}


def speed_section(repeats: int, device: str = "cpu") -> list[dict]:
    rows = []
    candidates = {"chunked": (selective_scan_torch, {}), "loop": (selective_scan_loop, {})}
    if device.startswith("cuda") and mamba_kernel_available():
        candidates["mamba_ssm"] = (selective_scan, {})
    settings = [(batch, False, backward) for batch in (1, 2) for backward in (False, True)]
    settings.append((1, True, False))
    for batch, strong, backward in settings:
        inputs = make_inputs(batch, strong_decay=strong, device=device)
        loop_repeats = max(1, repeats - 1) if backward else repeats
        timed = time_interleaved(candidates, inputs, backward, loop_repeats)
        row = {
            "device": device,
            "batch": batch,
            "inputs": "strong decay" if strong else "mamba init",
            "pass": "forward+backward" if backward else "forward",
            **{f"{name}_{key}": value for name, stats in timed.items() for key, value in stats.items()},
        }
        row["speedup_vs_loop"] = timed["loop"]["min_s"] / timed["chunked"]["min_s"]
        if "mamba_ssm" in timed:
            row["mamba_ssm_speedup_vs_chunked"] = timed["chunked"]["min_s"] / timed["mamba_ssm"]["min_s"]
        rows.append(row)
    return rows


def chunk_sweep_section(repeats: int) -> list[dict]:
    rows = []
    for length in (1024, 4096, 16384):
        inputs = make_inputs(1, length=length)
        sizes = [8, 16, 32, 64, 128, 256]
        for backward in (False, True):
            candidates = {str(size): (selective_scan_torch, {"chunk_size": size}) for size in sizes}
            timed = time_interleaved(candidates, inputs, backward, repeats)
            for size in sizes:
                rows.append(
                    {
                        "length": length,
                        "chunk_size": size,
                        "default": size == default_chunk_size(length),
                        "pass": "forward+backward" if backward else "forward",
                        "min_s": timed[str(size)]["min_s"],
                    }
                )
    return rows


def _resident_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def memory_probe(impl: str, batch: int) -> None:
    """Subprocess entry: print the peak resident-memory growth (MiB) of one forward + backward (Linux only)."""
    inputs = make_inputs(batch)
    fn = {"chunked": selective_scan_torch, "loop": selective_scan_loop}[impl]
    Path("/proc/self/clear_refs").write_text(
        "5", encoding="utf-8"
    )  # reset the peak (VmHWM) to the current resident size
    before = _resident_kib("VmRSS")
    run_once(fn, inputs, backward=True)
    print(json.dumps({"peak_extra_mib": (_resident_kib("VmHWM") - before) / 1024.0}))


def memory_section() -> list[dict]:
    rows = []
    for impl, batch in (("chunked", 1), ("chunked", 2), ("loop", 1)):
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-probe", impl, str(batch)],
            capture_output=True,
            text=True,
            encoding="utf-8",
            check=True,
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"impl": impl, "batch": batch, "pass": "forward+backward", **result})
    return rows


def _errors(actual: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Max error relative to max |reference|, and elementwise relative errors where |reference| >= 1% of its max."""
    actual, reference = actual.double(), reference.double()
    err = (actual - reference).abs()
    scale = reference.abs().max().item()
    mask = reference.abs() >= 0.01 * scale
    rel = (err[mask] / reference.abs()[mask]).flatten()
    return {
        "max_err_over_max_ref": err.max().item() / scale,
        "elementwise_rel_median": rel.median().item(),
        "elementwise_rel_p999": torch.quantile(rel, 0.999).item() if rel.numel() <= 1 << 24 else float("nan"),
        "elementwise_rel_max": rel.max().item(),
    }


def accuracy_section() -> dict:
    result: dict = {}
    if FIXTURE.is_file():
        cases = torch.load(FIXTURE, weights_only=True)["cases"]
        rows = []
        for case in cases:
            args = {k: case[k] for k in ARG_NAMES if k in case}
            ours = selective_scan_torch(**args, delta_softplus=True)
            exact = selective_scan_loop(**{k: v.double() for k, v in args.items()}, delta_softplus=True)
            rows.append(
                {
                    "shape": list(case["u"].shape),
                    "chunked_vs_fixture": _errors(ours, case["y"]),
                    "chunked_vs_float64": _errors(ours, exact),
                    "fixture_vs_float64": _errors(case["y"], exact),
                }
            )
        result["fixture"] = rows
    inputs = make_inputs(1)
    exact = selective_scan_loop(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True)
    result["mamba_init_b1_vs_float64"] = {
        "chunked": _errors(selective_scan_torch(**inputs, delta_softplus=True), exact),
        "loop": _errors(selective_scan_loop(**inputs, delta_softplus=True), exact),
    }
    return result


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def print_tables(results: dict) -> None:
    print(f"selective scan, dim {DIM}, dstate {DSTATE}, length {LENGTH}, float32, {torch.get_num_threads()} threads")
    print(f"{'device':7} {'batch':>5} {'inputs':13} {'pass':17} {'chunked ms':>10} {'loop ms':>9} {'speedup':>8}")
    for row in results["speed"]:
        extra = f"  mamba_ssm {row['mamba_ssm_min_s'] * 1e3:.2f} ms" if "mamba_ssm_min_s" in row else ""
        print(
            f"{row['device']:7} {row['batch']:>5} {row['inputs']:13} {row['pass']:17} "
            f"{row['chunked_min_s'] * 1e3:10.1f} {row['loop_min_s'] * 1e3:9.1f} {row['speedup_vs_loop']:7.1f}x{extra}"
        )
    if results.get("chunk_sweep"):
        print("chunk-size sweep (ms, batch 1; * = default):")
        for length in sorted({r["length"] for r in results["chunk_sweep"]}):
            for pass_name in ("forward", "forward+backward"):
                cells = [
                    f"{r['chunk_size']}{'*' if r['default'] else ''}:{r['min_s'] * 1e3:.0f}"
                    for r in results["chunk_sweep"]
                    if r["length"] == length and r["pass"] == pass_name
                ]
                print(f"  L={length:<6} {pass_name:17} " + "  ".join(cells))
    for row in results.get("memory", []):
        print(f"peak extra memory, {row['impl']}, batch {row['batch']}, fwd+bwd: {row['peak_extra_mib']:.0f} MiB")
    for i, row in enumerate(results["accuracy"].get("fixture", [])):
        ours, ref = row["chunked_vs_fixture"], row["fixture_vs_float64"]
        print(
            f"fixture case {i} {row['shape']}: max|y-ref|/max|ref| {ours['max_err_over_max_ref']:.1e}, elementwise "
            f"rel. median {ours['elementwise_rel_median']:.1e} max {ours['elementwise_rel_max']:.1e}; vs float64: "
            f"chunked {row['chunked_vs_float64']['max_err_over_max_ref']:.1e}, "
            f"fixture {ref['max_err_over_max_ref']:.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per candidate (after one warm-up)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument("--no-sweep", action="store_true", help="skip the chunk-size sweep")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--memory-probe", nargs=2, metavar=("IMPL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe[0], int(args.memory_probe[1]))
        return
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    results: dict = {
        "config": {"dim": DIM, "dstate": DSTATE, "length": LENGTH, "dtype": "float32", "repeats": args.repeats},
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(),
            "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "mamba_ssm": mamba_kernel_available(),
            "default_chunk_size": default_chunk_size(LENGTH),
        },
        "speed": speed_section(args.repeats),
    }
    if torch.cuda.is_available():
        results["speed"] += speed_section(args.repeats, device="cuda")
    results["chunk_sweep"] = [] if args.no_sweep else chunk_sweep_section(max(1, args.repeats - 1))
    results["memory"] = [] if args.no_memory or not Path("/proc/self/clear_refs").exists() else memory_section()
    results["accuracy"] = accuracy_section()
    write_json(args.output, results)
    print_tables(results)
    print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
