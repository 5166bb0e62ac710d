"""Tests of coseg.ops.selective_scan: fixture from mamba_ssm, float64 loop reference, gradients, layouts, errors."""

from __future__ import annotations

import math

import pytest
import torch

from coseg.ops import (
    default_chunk_size,
    mamba_kernel_available,
    selective_scan,
    selective_scan_backend,
    selective_scan_loop,
    selective_scan_torch,
)

ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(
    batch: int = 2,
    dim: int = 8,
    dstate: int = 3,
    length: int = 13,
    b_layout: str | int = "var",
    c_layout: str | int = "var",
    skip: bool = True,
    gate: bool = True,
    bias: bool = True,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> dict[str, torch.Tensor | None]:
    """Random scan inputs; a layout is "const" (dim, N), "var" (batch, N, L) or a group count (batch, G, N, L)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype)

    def matrix(layout: str | int) -> torch.Tensor:
        if layout == "const":
            return randn(dim, dstate)
        if layout == "var":
            return randn(batch, dstate, length)
        return randn(batch, layout, dstate, length)

    return {
        "u": randn(batch, dim, length),
        "delta": 0.5 * randn(batch, dim, length),
        "A": -(3.0 * torch.rand(dim, dstate, generator=gen, dtype=dtype) + 0.1),
        "B": matrix(b_layout),
        "C": matrix(c_layout),
        "D": randn(dim) if skip else None,
        "z": randn(batch, dim, length) if gate else None,
        "delta_bias": 0.3 * randn(dim) if bias else None,
    }


def outputs_and_grads(
    fn, inputs: dict, through_last: bool = True, **kwargs
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
    """Run ``fn`` with last state, back-propagate fixed weights of y (and the last state), return (y, last, grads)."""
    leaves = {k: None if v is None else v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    y, last = fn(**leaves, return_last_state=True, **kwargs)
    weight_y = torch.sin(torch.arange(y.numel(), device=y.device, dtype=y.dtype)).view_as(y)
    loss = (y * weight_y).sum()
    if through_last:
        weight_last = torch.cos(torch.arange(last.numel(), device=y.device, dtype=last.dtype)).view_as(last)
        loss = loss + (last * weight_last).sum()
    loss.backward()
    return y.detach(), last.detach(), [None if v is None else v.grad for v in leaves.values()]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, name: str) -> None:
    """``max|actual - expected| <= rtol * max|expected|`` (with a tiny floor for all-zero references)."""
    scale = max(expected.abs().max().item(), 1e-12)
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= rtol * scale, f"{name}: max error {err:.3e} > {rtol:.1e} * {scale:.3e}"


def test_hand_computed_values() -> None:
    # a = exp(1 * -ln 2) = 0.5 and b = u, so h = [1, 0.5 + 2, 1.25 + 3] = [1, 2.5, 4.25]
    u = torch.tensor([[[1.0, 2.0, 3.0]]])
    delta = torch.ones(1, 1, 3)
    A = torch.tensor([[-math.log(2.0)]])
    B = torch.ones(1, 1)
    C = torch.full((1, 1, 3), 2.0)
    D = torch.tensor([10.0])
    for fn in (selective_scan_loop, selective_scan_torch, selective_scan):
        y, last = fn(u, delta, A, B, C, D=D, return_last_state=True)
        torch.testing.assert_close(y, torch.tensor([[[12.0, 25.0, 38.5]]]))
        torch.testing.assert_close(last, torch.tensor([[[4.25]]]))
        gated = fn(u, delta, A, B, C, D=D, z=torch.zeros_like(u))  # silu(0) = 0
        torch.testing.assert_close(gated, torch.zeros_like(u))


def test_matches_mamba_ssm_fixture(shared_dir) -> None:
    """Every case of the reference outputs of mamba_ssm's selective_scan_fn, to 1e-4 of the largest output."""
    cases = torch.load(shared_dir / "fixtures" / "selective_scan_ref.pt", weights_only=True)["cases"]
    assert cases, "fixture holds no cases"
    for i, case in enumerate(cases):
        args = {k: case[k] for k in ARG_NAMES if k in case}
        for fn in (selective_scan, selective_scan_torch):
            y = fn(**args, delta_softplus=True)
            assert y.shape == case["y"].shape and y.dtype == case["y"].dtype
            assert_close(y, case["y"], 1e-4, f"case {i} {fn.__name__}")


LAYOUTS = [("const", "const"), ("var", "var"), ("var", "const"), ("const", "var"), (2, "var"), ("const", 4), (2, 4)]


@pytest.mark.parametrize("b_layout, c_layout", LAYOUTS)
@pytest.mark.parametrize("length, chunk_size", [(13, 4), (16, 4), (7, None), (1, None)])
def test_outputs_and_gradients_match_loop_float64(b_layout, c_layout, length, chunk_size) -> None:
    inputs = make_inputs(length=length, b_layout=b_layout, c_layout=c_layout)
    expected = outputs_and_grads(selective_scan_loop, inputs, delta_softplus=True)
    actual = outputs_and_grads(selective_scan_torch, inputs, delta_softplus=True, chunk_size=chunk_size)
    assert_close(actual[0], expected[0], 1e-12, "y")
    assert_close(actual[1], expected[1], 1e-12, "last state")
    for name, grad, grad_ref in zip(ARG_NAMES, actual[2], expected[2]):
        assert grad is not None and grad.shape == inputs[name].shape, name
        assert_close(grad, grad_ref, 1e-11, f"grad of {name}")


@pytest.mark.parametrize("skip, gate, bias, softplus", [(False, False, False, False), (True, False, True, False)])
def test_optional_terms_match_loop(skip, gate, bias, softplus) -> None:
    inputs = make_inputs(length=11, skip=skip, gate=gate, bias=bias)
    if not softplus:  # without softplus the step sizes must be made positive by the caller
        inputs["delta"] = inputs["delta"].abs()
    expected = outputs_and_grads(selective_scan_loop, inputs, delta_softplus=softplus)
    actual = outputs_and_grads(selective_scan_torch, inputs, delta_softplus=softplus, chunk_size=3)
    assert_close(actual[0], expected[0], 1e-12, "y")
    for name, grad, grad_ref in zip(ARG_NAMES, actual[2], expected[2]):
        assert (grad is None) == (inputs[name] is None), name
        if grad is not None:
            assert_close(grad, grad_ref, 1e-11, f"grad of {name}")


def test_gradcheck() -> None:
    inputs = make_inputs(batch=1, dim=4, dstate=2, length=7, b_layout=2, c_layout="var")
    leaves = tuple(inputs[k].detach().requires_grad_(True) for k in ARG_NAMES)

    def fn(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return selective_scan_torch(*args, delta_softplus=True, return_last_state=True, chunk_size=3)

    assert torch.autograd.gradcheck(fn, leaves)


def test_partial_gradients() -> None:
    """Only one input needs a gradient: the others get none and the requested one is still right."""
    inputs = make_inputs(length=10, b_layout="const", c_layout=2)
    for wanted in ("u", "delta", "A", "B", "C"):
        grads = []
        for fn, kwargs in ((selective_scan_torch, {"chunk_size": 4}), (selective_scan_loop, {})):
            leaves = {k: v if v is None else v.detach().clone().requires_grad_(k == wanted) for k, v in inputs.items()}
            y = fn(**leaves, **kwargs)
            weight = torch.sin(torch.arange(y.numel(), dtype=y.dtype)).view_as(y)
            (y * weight).sum().backward()
            assert all(v.grad is None for k, v in leaves.items() if v is not None and k != wanted)
            grads.append(leaves[wanted].grad)
        assert_close(grads[0], grads[1], 1e-11, f"grad of {wanted}")


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 16, 17, 100])
def test_chunk_size_does_not_change_result(chunk_size) -> None:
    inputs = make_inputs(length=17, dtype=torch.float32)
    y_ref, last_ref = selective_scan_loop(**inputs, delta_softplus=True, return_last_state=True)
    y, last = selective_scan_torch(**inputs, delta_softplus=True, return_last_state=True, chunk_size=chunk_size)
    assert_close(y, y_ref, 1e-5, "y")
    assert_close(last, last_ref, 1e-5, "last state")


def test_strong_decay_and_long_sequence_stay_finite() -> None:
    """exp(delta * A) underflows to 0 for strong decay: the chunked scan must not form exp(+large)."""
    inputs = make_inputs(batch=1, dim=4, dstate=2, length=300, dtype=torch.float32)
    inputs["A"] = torch.tensor([[-200.0, -0.01]] * 4)
    inputs["delta"] = 3.0 * inputs["delta"].abs() + 1.0
    y_ref = selective_scan_loop(**inputs, delta_softplus=True)
    y = selective_scan_torch(**inputs, delta_softplus=True, chunk_size=64)
    assert torch.isfinite(y).all()
    assert_close(y, y_ref, 1e-5, "y")


def test_growing_states_without_softplus() -> None:
    """Negative steps (no softplus) make the states grow; the chunked scan follows the recurrence."""
    inputs = make_inputs(length=24, bias=False)
    inputs["delta"] = -0.2 * inputs["delta"].abs()
    y_ref = selective_scan_loop(**inputs)
    y = selective_scan_torch(**inputs, chunk_size=5)
    assert_close(y, y_ref, 1e-12, "y")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_compute_in_float32(dtype) -> None:
    inputs = {k: v.to(dtype) for k, v in make_inputs(length=20, dtype=torch.float32).items()}
    as_float = {k: v.float() for k, v in inputs.items()}
    y_ref, last_ref = selective_scan_loop(**as_float, delta_softplus=True, return_last_state=True)
    for fn in (selective_scan_torch, selective_scan):
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        y, last = fn(**leaves, delta_softplus=True, return_last_state=True)
        assert y.dtype == dtype and last.dtype == torch.float32
        # only the output rounding differs from a float32 run on the same (rounded) inputs
        assert_close(y, y_ref.to(dtype), 1e-2, "y")
        assert_close(last, last_ref, 1e-5, "last state")
        y.float().sum().backward()
        for name, leaf in leaves.items():
            assert leaf.grad is not None and leaf.grad.dtype == dtype, name
            assert torch.isfinite(leaf.grad.float()).all(), name


def test_mixed_dtypes_follow_u() -> None:
    inputs = make_inputs(length=9, dtype=torch.float32)
    inputs["A"] = inputs["A"].double()
    y = selective_scan_torch(**inputs)
    assert y.dtype == torch.float32
    y64 = selective_scan_torch(**{k: v.double() for k, v in inputs.items()})
    assert y64.dtype == torch.float64
    assert_close(y, y64, 1e-5, "y")


def test_default_chunk_size() -> None:
    assert default_chunk_size(1) == 8
    assert default_chunk_size(256) == 8
    assert default_chunk_size(4096) == 32
    assert default_chunk_size(1 << 20) == 64
    for bad in (0, -3, 2.5, True, None):
        with pytest.raises(ValueError, match="length"):
            default_chunk_size(bad)


@pytest.mark.parametrize("chunk_size", [0, -1, 2.0, True])
def test_bad_chunk_size(chunk_size) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan_torch(**make_inputs(), chunk_size=chunk_size)


BAD_SHAPES = [
    ({"u": torch.zeros(2, 8)}, r"u must have shape \(batch, dim, length\)"),
    ({"u": torch.zeros(2, 8, 0), "delta": torch.zeros(2, 8, 0)}, "non-empty"),
    ({"delta": torch.zeros(2, 8, 12)}, r"delta shape \(2, 8, 12\) does not match u shape \(2, 8, 13\)"),
    ({"A": torch.zeros(7, 3)}, r"A must have shape \(dim, dstate\) = \(8, N\)"),
    ({"B": torch.zeros(8, 4)}, r"time-invariant B shape \(8, 4\) does not match A \(8, 3\)"),
    ({"C": torch.zeros(2, 3, 12)}, r"C shape \(2, 3, 12\) does not match \(batch, dstate, length\)"),
    ({"B": torch.zeros(1, 3, 13)}, r"B shape \(1, 3, 13\) does not match"),
    ({"C": torch.zeros(2, 3, 3, 13)}, "C has 3 groups, which does not divide dim 8"),
    ({"B": torch.zeros(2, 2, 4, 13)}, r"grouped B shape \(2, 2, 4, 13\) does not match"),
    ({"B": torch.zeros(2, 1, 1, 3, 13)}, "B must be"),
    ({"D": torch.zeros(7)}, r"D must have shape \(dim,\) = \(8,\)"),
    ({"delta_bias": torch.zeros(8, 1)}, r"delta_bias must have shape \(dim,\)"),
    ({"z": torch.zeros(2, 8, 14)}, r"z shape \(2, 8, 14\) does not match u shape"),
]


@pytest.mark.parametrize("fn", [selective_scan, selective_scan_torch, selective_scan_loop])
@pytest.mark.parametrize(
    "override, message", BAD_SHAPES, ids=[f"{i}-{'-'.join(o)}" for i, (o, _) in enumerate(BAD_SHAPES)]
)
def test_bad_shapes_name_the_tensors(fn, override, message) -> None:
    inputs = make_inputs(dtype=torch.float32)
    inputs.update(override)
    with pytest.raises(ValueError, match=message):
        fn(**inputs)


@pytest.mark.parametrize(
    "override, flags, message",
    ids=["complex A", "integer u", "list B", "int flag", "str flag"],
    argvalues=[
        ({"A": torch.zeros(8, 3, dtype=torch.complex64)}, {}, "A is complex"),
        ({"u": torch.zeros(2, 8, 13, dtype=torch.int64)}, {}, "u must be a floating-point tensor"),
        ({"B": [[0.0] * 3] * 8}, {}, "B must be a torch.Tensor"),
        ({}, {"delta_softplus": 1}, "delta_softplus must be a bool"),
        ({}, {"return_last_state": "yes"}, "return_last_state must be a bool"),
    ],
)
def test_bad_types(override, flags, message) -> None:
    inputs = make_inputs(dtype=torch.float32)
    inputs.update(override)
    for fn in (selective_scan, selective_scan_torch, selective_scan_loop):
        with pytest.raises(TypeError, match=message):
            fn(**inputs, **flags)


def test_dispatch_on_cpu_uses_torch_path() -> None:
    inputs = make_inputs(dtype=torch.float32)
    assert isinstance(mamba_kernel_available(), bool)
    assert selective_scan_backend(inputs["u"]) == "torch"
    torch.testing.assert_close(selective_scan(**inputs), selective_scan_torch(**inputs), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_path_on_cuda_matches_cpu() -> None:
    inputs = make_inputs(batch=2, dim=16, dstate=4, length=300, b_layout=2, c_layout="var", dtype=torch.float32)
    expected = outputs_and_grads(selective_scan_torch, inputs, delta_softplus=True)
    actual = outputs_and_grads(selective_scan_torch, {k: v.cuda() for k, v in inputs.items()}, delta_softplus=True)
    assert_close(actual[0].cpu(), expected[0], 1e-5, "y")
    for name, grad, grad_ref in zip(ARG_NAMES, actual[2], expected[2]):
        assert_close(grad.cpu(), grad_ref, 1e-4, f"grad of {name}")


@pytest.mark.skipif(
    not (torch.cuda.is_available() and mamba_kernel_available()), reason="needs a CUDA device and mamba_ssm"
)
@pytest.mark.parametrize("b_layout, c_layout", [("var", "var"), ("const", "const"), (2, 2)])
def test_mamba_kernel_matches_torch_path(b_layout, c_layout) -> None:
    inputs = make_inputs(
        batch=2, dim=64, dstate=8, length=1000, b_layout=b_layout, c_layout=c_layout, dtype=torch.float32
    )
    inputs = {k: v.cuda() for k, v in inputs.items()}
    assert selective_scan_backend(inputs["u"]) == "mamba_ssm"
    # the kernel does not back-propagate through the last state, so only y carries gradients here
    kernel = outputs_and_grads(selective_scan, inputs, through_last=False, delta_softplus=True)
    torch_path = outputs_and_grads(selective_scan_torch, inputs, through_last=False, delta_softplus=True)
    assert_close(kernel[0], torch_path[0], 1e-4, "y")
    assert_close(kernel[1], torch_path[1], 1e-4, "last state")
    for name, grad, grad_ref in zip(ARG_NAMES, kernel[2], torch_path[2]):
        assert_close(grad, grad_ref, 1e-3, f"grad of {name}")
