"""Low-level operators: Mamba's selective scan (``mamba_ssm`` CUDA kernel when installed, chunked PyTorch otherwise)."""

from coseg.ops.selective_scan import (
    default_chunk_size,
    mamba_kernel_available,
    selective_scan,
    selective_scan_backend,
    selective_scan_loop,
    selective_scan_torch,
)

__all__ = [
    "default_chunk_size",
    "mamba_kernel_available",
    "selective_scan",
    "selective_scan_backend",
    "selective_scan_loop",
    "selective_scan_torch",
]
