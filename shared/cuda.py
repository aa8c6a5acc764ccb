"""Is there a CUDA device? Answered without importing torch where no NVIDIA driver is installed.

``torch.cuda.is_available()`` needs ``import torch`` (about a second and 0.6 GiB of memory), so a
CPU-only process that only asks would pay that for nothing. Without an NVIDIA driver (no
``/proc/driver/nvidia/version``, no ``/dev/nvidia<N>``) or with ``CUDA_VISIBLE_DEVICES`` set to
hide every device, CUDA cannot be available and torch is not asked; otherwise (or when torch is
loaded already) torch answers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def nvidia_driver_present() -> bool:
    """An NVIDIA kernel driver with a device this process may use (torch may still find no CUDA)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch where it cannot be true."""
    if "torch" not in sys.modules and not nvidia_driver_present():
        return False
    import torch

    return bool(torch.cuda.is_available())
