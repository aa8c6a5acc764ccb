"""torch's process-wide intra-op thread count: the one place ClassPulse sets it.

Services ask for a count through :func:`shared.service.run_service` (``Runtime.torch_threads``);
one-shot commands (train, replay, bench) call these functions. torch is imported only when a
count is asked for, so services without torch never load it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def set_torch_threads(n: int) -> None:
    """Use ``n`` intra-op threads from now on (0 = leave torch's choice as it is)."""
    if n:
        import torch

        torch.set_num_threads(n)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``n`` intra-op threads inside the block, the previous count restored after (0 = leave as is: no import)."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    set_torch_threads(n)
    try:
        yield
    finally:
        set_torch_threads(before)
