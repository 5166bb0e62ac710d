"""Mamba's selective scan: the ``mamba_ssm`` CUDA kernel when present, a fast chunked PyTorch scan otherwise.

The selective state-space recurrence (Gu & Dao, "Mamba", 2023) for every batch item ``b``, channel ``d`` and state
index ``n`` is::

    a_t = exp(delta_t * A[d, n])                       (decay, in (0, 1] for A <= 0 and delta >= 0)
    h_t = a_t * h_{t-1} + delta_t * u_t * B_t[n]        (h_{-1} = 0)
    y_t = sum_n C_t[n] * h_t[n] + D[d] * u_t            (then y_t * silu(z_t) when a gate z is given)

Three implementations share one argument check:

- :func:`selective_scan` dispatches: ``mamba_ssm``'s ``selective_scan_fn`` kernel for CUDA tensors when that package
  imports, :func:`selective_scan_torch` otherwise (:func:`selective_scan_backend` says which one a tensor gets).
- :func:`selective_scan_torch` is a chunked scan. The sequence is cut into ``num_chunks`` chunks of ``chunk_size``
  steps and every step loop runs over all chunks at once, so there are ``2 * chunk_size + num_chunks`` small Python
  iterations instead of ``length``. Each state tensor of one step, shaped ``(batch, groups, dim / groups, dstate,
  num_chunks)``, stays in cache, so no ``(batch, dim, length, dstate)`` tensor is ever built in the forward pass:

  1. local scan: run the recurrence inside every chunk from a zero state, keep only each chunk's final state;
  2. carry: a loop over chunks gives each chunk's true initial state from the previous chunk's final local state and
     its total decay ``exp(A * sum(delta over the chunk))``;
  3. output scan: run the recurrence again from the true initial states and contract with ``C`` at every step.

  Only products of decays are formed, never ``exp(-cumsum)``, so the scan cannot overflow where the sequential
  recurrence does not; exponents are raised to ``log(tiny) + 1`` (see :func:`_decay`), which keeps ``exp`` off its
  25 times slower subnormal path. The backward pass (a custom :class:`torch.autograd.Function`) saves only the inputs
  and the chunk initial states. It recomputes the states, and runs the adjoint recurrence
  ``g_t = a_{t+1} g_{t+1} + C_t * dy_t`` with the same chunk decomposition: a forward-order pass gives each chunk's
  local adjoint and the block start states, a carry loop runs over the chunks in reverse, then the steps are visited
  backwards in blocks of about ``sqrt(chunk_size / 2)`` steps whose states are recomputed into two small buffers.
  About ``2 * sqrt(2 * chunk_size) + 8`` state-sized float32 buffers of ``batch * dim * dstate * num_chunks``
  elements are live at once (about 24 MB at batch 1, dim 256, dstate 8, length 4096, chunk size 32, against 33.5 MB
  for one ``(batch, dim, length, dstate)`` tensor); the whole forward + backward at that size raises the peak
  resident memory by about 80 MiB, the autograd graph of the per-step loop by about 260 MiB.
- :func:`selective_scan_loop` is the plain per-step loop, differentiable by autograd, used as the reference in tests
  and benchmarks.

Conventions follow ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``: computation in float32 (float64 when
``u`` is float64), output in ``u``'s dtype, last state ``(batch, dim, dstate)`` in the computation dtype. Unlike the
kernel, the PyTorch paths also back-propagate through the returned last state. Complex ``A`` is not supported.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from monai.utils import optional_import
from torch.autograd.function import once_differentiable

__all__ = [
    "default_chunk_size",
    "mamba_kernel_available",
    "selective_scan",
    "selective_scan_backend",
    "selective_scan_loop",
    "selective_scan_torch",
]

_MAMBA_MODULE = "mamba_ssm.ops.selective_scan_interface"
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

ScanOutput = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@functools.cache
def _mamba_selective_scan_fn() -> Callable[..., ScanOutput] | None:
    """Import ``mamba_ssm``'s kernel entry point on first use; ``None`` when it does not import."""
    fn, found = optional_import(_MAMBA_MODULE, name="selective_scan_fn")
    return fn if found else None


def mamba_kernel_available() -> bool:
    """Whether ``mamba_ssm``'s selective-scan CUDA kernel imports in this environment (checked once, lazily)."""
    return _mamba_selective_scan_fn() is not None


def selective_scan_backend(u: torch.Tensor) -> Literal["mamba_ssm", "torch"]:
    """Name the implementation :func:`selective_scan` uses for inputs shaped and placed like ``u``.

    Args:
        u: the input sequence that would be passed to :func:`selective_scan`.

    Returns:
        ``"mamba_ssm"`` when ``u`` is a float32/float16/bfloat16 CUDA tensor and the kernel imports, else ``"torch"``.
    """
    if u.is_cuda and u.dtype in _KERNEL_DTYPES and mamba_kernel_available():
        return "mamba_ssm"
    return "torch"


def default_chunk_size(length: int) -> int:
    """Chunk size used by :func:`selective_scan_torch` for a sequence of ``length`` steps.

    A power of two close to ``sqrt(length) / 2``, between 8 and 64: on CPU the run time is flat for chunk sizes
    between about ``sqrt(length) / 4`` and ``sqrt(length)`` (see ``benchmarks/bench_selective_scan.py``); smaller
    chunks mean more carry iterations, larger ones longer step loops over smaller tensors.

    Args:
        length: sequence length, at least 1.

    Returns:
        The chunk size.

    Raises:
        ValueError: when ``length`` is not a positive integer.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    target = max(math.sqrt(length) / 2.0, 1.0)
    return int(min(max(2 ** round(math.log2(target)), 8), 64))


def _check_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
) -> None:
    """Check types, shapes, dtypes and devices of the selective-scan arguments; raise naming the culprit."""
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    for name, tensor in named.items():
        if tensor is None and name in ("D", "z", "delta_bias"):
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.is_complex():
            raise TypeError(f"{name} is complex ({tensor.dtype}); only real selective scans are supported")
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
        if tensor.device != u.device:
            raise ValueError(f"{name} is on {tensor.device} but u is on {u.device}; put all tensors on one device")
    for name, flag in (("delta_softplus", delta_softplus), ("return_last_state", return_last_state)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if u.ndim != 3:
        raise ValueError(f"u must have shape (batch, dim, length), got {tuple(u.shape)}")
    batch, dim, length = u.shape
    if batch < 1 or dim < 1 or length < 1:
        raise ValueError(f"u must have non-empty batch, dim and length, got {tuple(u.shape)}")
    if delta.shape != u.shape:
        raise ValueError(f"delta shape {tuple(delta.shape)} does not match u shape {tuple(u.shape)}")
    if A.ndim != 2 or A.shape[0] != dim or A.shape[1] < 1:
        raise ValueError(
            f"A must have shape (dim, dstate) = ({dim}, N) to match u {tuple(u.shape)}, got {tuple(A.shape)}"
        )
    dstate = A.shape[1]
    for name, tensor in (("B", B), ("C", C)):
        if tensor.ndim == 2:
            if tensor.shape != A.shape:
                raise ValueError(f"time-invariant {name} shape {tuple(tensor.shape)} does not match A {tuple(A.shape)}")
        elif tensor.ndim == 3:
            if tensor.shape != (batch, dstate, length):
                raise ValueError(
                    f"{name} shape {tuple(tensor.shape)} does not match (batch, dstate, length) = "
                    f"({batch}, {dstate}, {length}) from u {tuple(u.shape)} and A {tuple(A.shape)}"
                )
        elif tensor.ndim == 4:
            groups = tensor.shape[1]
            if tensor.shape[0] != batch or tensor.shape[2:] != (dstate, length) or groups < 1:
                raise ValueError(
                    f"grouped {name} shape {tuple(tensor.shape)} does not match (batch, groups, dstate, length) = "
                    f"({batch}, G, {dstate}, {length}) from u {tuple(u.shape)} and A {tuple(A.shape)}"
                )
            if dim % groups:
                raise ValueError(f"{name} has {groups} groups, which does not divide dim {dim} of u")
        else:
            raise ValueError(
                f"{name} must be (dim, dstate), (batch, dstate, length) or (batch, groups, dstate, length), "
                f"got {tuple(tensor.shape)}"
            )
    for name, tensor in (("D", D), ("delta_bias", delta_bias)):
        if tensor is not None and tensor.shape != (dim,):
            raise ValueError(
                f"{name} must have shape (dim,) = ({dim},) to match u {tuple(u.shape)}, got {tuple(tensor.shape)}"
            )
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z shape {tuple(z.shape)} does not match u shape {tuple(u.shape)}")


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prepare_delta(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> torch.Tensor:
    """Step sizes ``softplus(delta + delta_bias)`` (softplus and bias optional) in ``dtype``, shape ``(B, D, L)``."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)  # beta 1, threshold 20: the same as the CUDA kernel
    return delta


def _finish_output(
    y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None, dtype_out: torch.dtype
) -> torch.Tensor:
    """Add the skip term ``D * u``, apply the gate ``silu(z)`` and cast; all tensors ``(B, D, L)``."""
    if D is not None:
        y = torch.addcmul(y, u, D.to(y.dtype)[:, None])
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_out)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> ScanOutput:
    """Selective scan with the signature and results of ``mamba_ssm``'s ``selective_scan_fn``.

    Runs ``mamba_ssm``'s CUDA kernel for float32/float16/bfloat16 CUDA tensors when ``mamba_ssm`` imports, and
    :func:`selective_scan_torch` otherwise (:func:`selective_scan_backend` tells which). The kernel needs ``A``,
    ``D`` and ``delta_bias`` in float32 and casts nothing else, and it does not back-propagate through the
    returned last state.

    Args:
        u: input sequence, shape ``(batch, dim, length)``.
        delta: step sizes before bias and softplus, shape ``(batch, dim, length)``.
        A: real state matrix, shape ``(dim, dstate)``; negative entries give decaying states.
        B: input matrix, ``(dim, dstate)`` (time-invariant), ``(batch, dstate, length)`` or grouped
            ``(batch, groups, dstate, length)`` where group ``g`` serves channels ``g * dim / groups`` onwards.
        C: output matrix, same layouts as ``B`` (its group count may differ).
        D: skip weights, shape ``(dim,)``; ``None`` for no skip term.
        z: gate, shape ``(batch, dim, length)``; the output is multiplied by ``silu(z)``. ``None`` for no gate.
        delta_bias: added to ``delta`` before the softplus, shape ``(dim,)``.
        delta_softplus: apply ``softplus`` to ``delta + delta_bias``.
        return_last_state: also return the state after the last step.

    Returns:
        ``y`` of shape ``(batch, dim, length)`` in ``u``'s dtype, and with ``return_last_state`` the pair
        ``(y, last_state)`` where ``last_state`` has shape ``(batch, dim, dstate)``.

    Raises:
        TypeError: for non-tensor, integer or complex inputs, or non-bool flags.
        ValueError: for mismatching shapes or devices, naming the tensors involved.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if selective_scan_backend(u) == "mamba_ssm":
        kernel = _mamba_selective_scan_fn()
        return kernel(
            u,
            delta,
            A.float(),
            B,
            C,
            None if D is None else D.float(),
            z,
            None if delta_bias is None else delta_bias.float(),
            delta_softplus,
            return_last_state,
        )
    return selective_scan_torch(
        u,
        delta,
        A,
        B,
        C,
        D=D,
        z=z,
        delta_bias=delta_bias,
        delta_softplus=delta_softplus,
        return_last_state=return_last_state,
    )


def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    chunk_size: int | None = None,
) -> ScanOutput:
    """Chunked pure-PyTorch selective scan (any device), differentiable with a recomputing backward.

    Arguments, results and errors are those of :func:`selective_scan`, plus:

    Args:
        chunk_size: steps per chunk; ``None`` picks :func:`default_chunk_size` of the length. The sequence is padded
            with zero steps (decay 1, no input) up to a multiple of it; the result does not depend on it beyond
            rounding.

    Returns:
        ``y`` ``(batch, dim, length)``, or ``(y, last_state)`` with ``last_state`` ``(batch, dim, dstate)``.

    Raises:
        TypeError: for non-tensor, integer or complex inputs, or non-bool flags.
        ValueError: for mismatching shapes or devices, or a ``chunk_size`` that is not a positive integer.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    if chunk_size is None:
        chunk_size = default_chunk_size(length)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    chunk_size = min(chunk_size, length)
    num_chunks = -(-length // chunk_size)
    pad = num_chunks * chunk_size - length

    dtype = _compute_dtype(u)
    uc = u.to(dtype)
    dt = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    group_counts = [x.shape[1] if x.ndim == 4 else 1 for x in (B, C)]
    groups = math.lcm(*group_counts)
    per_group = dim // groups

    def to_steps(x: torch.Tensor, *shape: int) -> torch.Tensor:
        # (..., length) -> (chunk_size, *shape) with step l = k * chunk_size + t at [t, ..., k]: one 2-D transpose
        # (ATen copies 2-D transposes in blocks, 2-4 times faster than the equivalent 5-D permute)
        if pad:
            x = F.pad(x, (0, pad))
        return x.reshape(-1, chunk_size).t().contiguous().view(chunk_size, *shape)

    def to_step_matrix(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:  # time-invariant (dim, dstate) -> (groups, per_group, dstate, 1)
            return x.to(dtype).reshape(groups, per_group, dstate, 1)
        x = x.to(dtype)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.shape[1] != groups:
            x = x.repeat_interleave(groups // x.shape[1], dim=1)
        return to_steps(x, batch, groups, 1, dstate, num_chunks)

    y_steps, last = _ChunkedScan.apply(
        to_steps(dt, batch, groups, per_group, num_chunks),
        to_steps(uc, batch, groups, per_group, num_chunks),
        A.to(dtype).reshape(groups, per_group, dstate, 1),
        to_step_matrix(B),
        to_step_matrix(C),
    )
    # (chunk_size, batch, groups, per_group, num_chunks) -> (batch, dim, length)
    y = y_steps.view(chunk_size, -1).t().reshape(batch, dim, num_chunks * chunk_size)
    if pad:
        y = y[..., :length]
    out = _finish_output(y, uc, D, z, u.dtype)
    if return_last_state:
        return out, last.reshape(batch, dim, dstate)
    return out


class _ChunkedScan(torch.autograd.Function):
    """Core of :func:`selective_scan_torch` on step-major tensors (see the module docstring for the method).

    Shapes, with ``T`` the chunk size, ``K`` the number of chunks, ``G`` groups, ``H = dim / G``, ``N`` states:
    ``delta`` and ``u`` are ``(T, batch, G, H, K)``, ``A`` is ``(G, H, N, 1)``, ``B`` and ``C`` are either
    step-varying ``(T, batch, G, 1, N, K)`` or time-invariant ``(G, H, N, 1)``. Outputs: ``y`` ``(T, batch, G, H, K)``
    without the skip term, last state ``(batch, G, H, N)``.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        delta: torch.Tensor,
        u: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        steps, batch, groups, per_group, num_chunks = delta.shape
        state_shape = (batch, groups, per_group, A.shape[2], num_chunks)
        dtu = delta * u
        # 1. local scan from zero states: final state of every chunk
        local = delta.new_zeros(state_shape)
        decay_t = delta.new_empty(state_shape)
        for t in range(steps):
            _decay(delta[t], A, out=decay_t)
            local.mul_(decay_t).addcmul_(dtu[t].unsqueeze(-2), _at_step(B, t))
        # 2. carry: initial state of every chunk
        init, last = _carry_forward(local, _decay(delta.sum(0), A))
        # 3. output scan from the true initial states
        y = delta.new_empty(delta.shape)
        h = init.clone()
        scratch = delta.new_empty(state_shape)  # preallocated: a fresh large tensor per step costs page faults
        for t in range(steps):
            _decay(delta[t], A, out=decay_t)
            h.mul_(decay_t).addcmul_(dtu[t].unsqueeze(-2), _at_step(B, t))
            torch.sum(torch.mul(h, _at_step(C, t), out=scratch), dim=-2, out=y[t])
        ctx.save_for_backward(delta, u, A, B, C, init)
        return y, last

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_y: torch.Tensor, grad_last: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        delta, u, A, B, C, init = ctx.saved_tensors
        need_delta, need_u, need_A, need_B, need_C = ctx.needs_input_grad
        steps = delta.shape[0]
        state_shape = init.shape
        grad_y = grad_y.contiguous()
        dtu = delta * u
        decay_t = delta.new_empty(state_shape)
        scratch = delta.new_empty(state_shape)  # preallocated: a fresh large tensor per step costs page faults
        # The reverse pass needs h_{t-1} and a_t at every step. Instead of one (steps, *state_shape) buffer, keep the
        # states at the start of every block of `block` steps and recompute each block into two small buffers:
        # steps / block + 2 * block state-sized tensors, fewest for block = sqrt(steps / 2).
        block = max(1, round(math.sqrt(steps / 2)))
        block_starts = delta.new_empty((-(-steps // block), *state_shape))

        # Forward order: block start states, the gradient of C, and for the adjoint g_t = a_{t+1} g_{t+1} + C_t dy_t
        # each chunk's local part sum_t (a_0 ... a_t) C_t dy_t, i.e. what it passes to the previous chunk by itself.
        h = init.clone()
        decay_prefix = delta.new_ones(state_shape)
        local = delta.new_zeros(state_shape)
        grad_C = _grad_matrix_buffer(C, state_shape) if need_C else None
        for t in range(steps):
            if t % block == 0:
                block_starts[t // block].copy_(h)
            _decay(delta[t], A, out=decay_t)
            h.mul_(decay_t).addcmul_(dtu[t].unsqueeze(-2), _at_step(B, t))
            torch.mul(grad_y[t].unsqueeze(-2), _at_step(C, t), out=scratch)
            local.addcmul_(decay_prefix.mul_(decay_t), scratch)
            if need_C:
                _accumulate_matrix_grad(grad_C, t, h, grad_y[t].unsqueeze(-2), C, scratch)
        adjoint = _carry_backward(local, _decay(delta.sum(0), A), grad_last)
        del h, decay_prefix, local

        # Reverse order, block by block: the adjoint of every step and the gradients of the inputs
        need_q = need_delta or need_A
        grad_delta = torch.empty_like(delta) if need_delta else None
        grad_u = torch.empty_like(u) if need_u else None
        grad_A_acc = torch.zeros_like(init) if need_A else None
        grad_B = _grad_matrix_buffer(B, state_shape) if need_B else None
        grad_bu = delta.new_empty(delta.shape[1:])  # gradient of delta_t * u_t
        states = delta.new_empty((block, *state_shape))
        decays = delta.new_empty((block, *state_shape))
        for first in reversed(range(0, steps, block)):
            count = min(block, steps - first)
            start = block_starts[first // block]
            for i in range(count):
                t = first + i
                _decay(delta[t], A, out=decays[i])
                torch.mul(start if i == 0 else states[i - 1], decays[i], out=states[i])
                states[i].addcmul_(dtu[t].unsqueeze(-2), _at_step(B, t))
            for i in reversed(range(count)):
                t = first + i
                adjoint.addcmul_(grad_y[t].unsqueeze(-2), _at_step(C, t))  # now the gradient of h_t
                if need_delta or need_u:
                    torch.sum(torch.mul(adjoint, _at_step(B, t), out=scratch), dim=-2, out=grad_bu)
                if need_q:
                    q = torch.mul(adjoint, start if i == 0 else states[i - 1], out=scratch)
                    q.mul_(decays[i])  # gradient of a_t times a_t
                    if need_A:
                        grad_A_acc.addcmul_(q, delta[t].unsqueeze(-2))
                    if need_delta:
                        torch.sum(q.mul_(A), dim=-2, out=grad_delta[t])
                        grad_delta[t].addcmul_(grad_bu, u[t])
                if need_u:
                    torch.mul(grad_bu, delta[t], out=grad_u[t])
                if need_B:
                    _accumulate_matrix_grad(grad_B, t, adjoint, dtu[t].unsqueeze(-2), B, scratch)
                adjoint.mul_(decays[i])

        grad_A = grad_A_acc.sum(dim=(0, 4)).unsqueeze(-1) if need_A else None
        if need_B:
            grad_B = _finish_matrix_grad(grad_B, B)
        if need_C:
            grad_C = _finish_matrix_grad(grad_C, C)
        return grad_delta, grad_u, grad_A, grad_B, grad_C


def _decay(delta: torch.Tensor, A: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Decay ``exp(delta * A)``: ``(batch, G, H, K)`` x ``(G, H, N, 1)`` -> ``(batch, G, H, N, K)``, into ``out``.

    The exponent is raised to at least ``log(tiny) + 1`` of its dtype (decays of at least ``e * tiny``, 3e-38 in
    float32): on x86 CPUs ``exp`` runs about 25 times slower where its result is subnormal or zero, and such decays
    change the states by less than ``3e-38`` times their size.
    """
    floor = math.log(torch.finfo(A.dtype).tiny) + 1.0
    return torch.mul(delta.unsqueeze(-2), A, out=out).clamp_(min=floor).exp_()


def _at_step(matrix: torch.Tensor, t: int) -> torch.Tensor:
    """``B`` or ``C`` at step ``t``: ``(batch, G, 1, N, K)`` for step-varying, the ``(G, H, N, 1)`` matrix otherwise."""
    return matrix[t] if matrix.ndim == 6 else matrix


def _carry_forward(local: torch.Tensor, chunk_decay: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk initial states ``(..., K)`` and the final state ``(...)`` from local final states and chunk decays."""
    init = torch.empty_like(local)
    init[..., 0] = 0
    for c in range(1, local.shape[-1]):
        torch.addcmul(local[..., c - 1], chunk_decay[..., c - 1], init[..., c - 1], out=init[..., c])
    last = torch.addcmul(local[..., -1], chunk_decay[..., -1], init[..., -1])
    return init, last


def _carry_backward(local: torch.Tensor, chunk_decay: torch.Tensor, grad_last: torch.Tensor) -> torch.Tensor:
    """Adjoint entering each chunk from the right, ``(..., K)``.

    ``local[..., c]`` is chunk ``c``'s local adjoint carried through its first decay, i.e. its contribution to the
    adjoint entering chunk ``c - 1``; ``grad_last`` ``(...)`` enters the last chunk.
    """
    incoming = torch.empty_like(local)
    incoming[..., -1] = grad_last
    for c in range(local.shape[-1] - 1, 0, -1):
        torch.addcmul(local[..., c], chunk_decay[..., c], incoming[..., c], out=incoming[..., c - 1])
    return incoming


def _grad_matrix_buffer(matrix: torch.Tensor, state_shape: torch.Size) -> torch.Tensor:
    """Zeroed gradient buffer: like ``matrix`` when step-varying, a full state-shaped accumulator otherwise."""
    if matrix.ndim == 6:
        return torch.zeros_like(matrix)
    return matrix.new_zeros(state_shape)


def _accumulate_matrix_grad(
    buffer: torch.Tensor, t: int, factor: torch.Tensor, other: torch.Tensor, matrix: torch.Tensor, scratch: torch.Tensor
) -> None:
    """Add step ``t``'s gradient ``factor * other`` (state-shaped, via ``scratch``) to ``buffer``."""
    if matrix.ndim == 6:  # step-varying: sum over the channels of each group
        torch.sum(torch.mul(factor, other, out=scratch), dim=2, keepdim=True, out=buffer[t])
    else:
        buffer.addcmul_(factor, other)


def _finish_matrix_grad(buffer: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Gradient in ``matrix``'s layout: reduce a time-invariant accumulator over batch and chunks."""
    if matrix.ndim == 6:
        return buffer
    return buffer.sum(dim=(0, 4)).unsqueeze(-1)


def selective_scan_loop(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> ScanOutput:
    """Reference selective scan: one Python iteration per step, differentiable by plain autograd.

    Slow (``length`` iterations) and memory-hungry under autograd; meant for tests and benchmarks. Arguments,
    results and errors are those of :func:`selective_scan`.

    Returns:
        ``y`` ``(batch, dim, length)``, or ``(y, last_state)`` with ``last_state`` ``(batch, dim, dstate)``.

    Raises:
        TypeError: for non-tensor, integer or complex inputs, or non-bool flags.
        ValueError: for mismatching shapes or devices.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    batch, dim, length = u.shape
    dtype = _compute_dtype(u)
    uc = u.to(dtype)
    dt = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    A = A.to(dtype)

    def per_channel(x: torch.Tensor) -> torch.Tensor:
        # (dim, dstate) stays; (batch, [groups,] dstate, length) -> (batch, dim, dstate, length)
        x = x.to(dtype)
        if x.ndim == 2:
            return x
        if x.ndim == 3:
            return x.unsqueeze(1).expand(-1, dim, -1, -1)
        return x.repeat_interleave(dim // x.shape[1], dim=1)

    def steps(x: torch.Tensor) -> tuple[torch.Tensor, ...] | torch.Tensor:
        # one tensor per step; unbind once, as indexing x[..., t] at every step makes the backward quadratic
        return x if x.ndim == 2 else x.unbind(-1)

    B_steps, C_steps = steps(per_channel(B)), steps(per_channel(C))
    h = uc.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t, (delta_t, u_t) in enumerate(zip(dt.unbind(-1), uc.unbind(-1))):
        B_t = B_steps if isinstance(B_steps, torch.Tensor) else B_steps[t]
        C_t = C_steps if isinstance(C_steps, torch.Tensor) else C_steps[t]
        h = torch.exp(delta_t[:, :, None] * A) * h + (delta_t * u_t)[:, :, None] * B_t
        ys.append((h * C_t).sum(-1))
    out = _finish_output(torch.stack(ys, dim=-1), uc, D, z, u.dtype)
    return (out, h) if return_last_state else out
