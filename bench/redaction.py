"""Redaction recall and false positives, per family, on two corpora kept apart.

    python -m bench.redaction              # the two corpus tables
    python -m bench.redaction --agreement  # also the shared labelled data (about a minute)
    python -m bench.redaction --speed [--baseline OLD.py]  # CPU per case on the shared data

1. The independent corpus (tests/fixtures/redaction_independent.jsonl): cases written from
   public format descriptions before the patterns were broadened. Recall = caught / cases per
   family (a documented limit counts as a miss); false-positive rate = benign texts changed.
2. The generated corpus (tests/redaction_corpus.py, seeds 0-2, plus its hand-written hard
   cases): secrets seeded from the shapes the patterns were written for, look-alikes that must
   survive. Recall = seeded values gone; false-positive rate = look-alikes touched.
3. --agreement: RAGTruth QA and FRANK test as the worker sees them. How many texts redaction
   changes (numbers in answers are evidence, not secrets) and the local faithfulness scorer's
   AUROC against the human labels with and without redaction.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from judges.redact import Redactor, redact_case
from tests.redaction_corpus import HARD_LOOKALIKES, HARD_SECRETS, corpus
from tests.redaction_independent import Tally, load, score
from tests.test_redact_independent import LIMITS

SEEDS = (0, 1, 2)


def _redact(text: str) -> str:
    return Redactor().text(text)


def independent() -> None:
    tallies, failures = score(load(), _redact, LIMITS)
    print("### Independent corpus (tests/fixtures/redaction_independent.jsonl)\n")
    print("| family | cases | caught | recall |")
    print("|---|---|---|---|")
    pos = Tally()
    for family, t in sorted(tallies.items()):
        if family.startswith("benign:"):
            continue
        pos.cases += t.cases
        pos.hits += t.hits
        print(f"| {family} | {t.cases} | {t.hits} | {t.rate:.3f} |")
    print(f"| **all secret/PII families** | {pos.cases} | {pos.hits} | **{pos.rate:.3f}** |")
    print("\n| benign family | texts | changed | false-positive rate |")
    print("|---|---|---|---|")
    neg = Tally()
    for family, t in sorted(tallies.items()):
        if not family.startswith("benign:"):
            continue
        neg.cases += t.cases
        neg.hits += t.hits
        print(f"| {family[7:]} | {t.cases} | {t.cases - t.hits} | {1 - t.rate:.3f} |")
    print(f"| **all benign** | {neg.cases} | {neg.cases - neg.hits} | **{1 - neg.rate:.3f}** |")
    print(f"\ndocumented limits (counted as misses): {sorted(LIMITS) or 'none'}")
    for case, out in failures:
        print(f"FAIL {case.id}: {out[:120]!r}")


def generated() -> None:
    seeded: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    looks = touched = 0
    for seed in SEEDS:
        for doc in corpus(seed):
            out = _redact(doc.text)
            for kind, value in doc.secrets:
                seeded[kind] += 1
                missed[kind] += value in out
            looks += len(doc.lookalikes)
            touched += sum(v not in out for v in doc.lookalikes)
    for kind, value, text in HARD_SECRETS:
        seeded[f"{kind} (hard)"] += 1
        missed[f"{kind} (hard)"] += value in _redact(text)
    hard_touched = sum(v not in _redact(text) for v, text in HARD_LOOKALIKES)
    print(f"\n### Generated corpus (tests/redaction_corpus.py, seeds {SEEDS}, + hard cases)\n")
    print("| kind | seeded | caught | recall |")
    print("|---|---|---|---|")
    for kind in sorted(seeded):
        n, m = seeded[kind], missed[kind]
        print(f"| {kind} | {n} | {n - m} | {(n - m) / n:.3f} |")
    total, total_missed = sum(seeded.values()), sum(missed.values())
    print(f"| **all** | {total} | {total - total_missed} | **{1 - total_missed / total:.3f}** |")
    print(
        f"\nlook-alikes touched: {touched}/{looks} ({touched / looks:.3%}); "
        f"hard look-alikes touched: {hard_touched}/{len(HARD_LOOKALIKES)}"
    )


def agreement() -> None:
    from bench.local_data import load_frank, load_ragtruth
    from judges.agreement import auroc
    from judges.scorers import local as lg

    items = [it for it in load_ragtruth() + load_frank() if it.split in ("all", "test")]
    changed = Counter[str]()
    kinds = Counter[str]()
    print("\n### Shared labelled data: redaction as the worker applies it\n")
    print("| set | answers | cases changed | AUROC raw | AUROC redacted | max abs score change |")
    print("|---|---|---|---|---|---|")
    for name in ("ragtruth", "cnndm", "xsum"):
        sel = [it for it in items if it.dataset == name]
        y = [it.hallucinated for it in sel]
        raw, red, n_changed = [], [], 0
        for it in sel:
            redacted = redact_case(it.case)
            if redacted != it.case:
                n_changed += 1
                for text in (redacted.answer, *(c.text for c in redacted.contexts)):
                    for kind in _kinds(text):
                        kinds[kind] += 1
            raw.append(1 - lg.score_faithfulness_local(it.case).value)
            red.append(1 - lg.score_faithfulness_local(redacted).value)
        changed[name] = n_changed
        delta = max(abs(a - b) for a, b in zip(raw, red, strict=True))
        print(
            f"| {name} | {len(sel)} | {n_changed} | {auroc(y, raw):.4f} | {auroc(y, red):.4f} "
            f"| {delta:.4f} |"
        )
    print(f"\nplaceholders by kind in changed cases: {dict(kinds)}")


def speed(baseline: str | None) -> None:
    """CPU per redact_case on RAGTruth + FRANK, 7 interleaved rounds (a baseline module, e.g.
    `git show 7e6119e:judges/redact.py > /tmp/redact_old.py`, runs in the same rounds)."""
    import importlib.util
    import statistics
    import time

    from bench.local_data import load_frank, load_ragtruth
    from judges import redact

    sides = {"current": redact.redact_case}
    if baseline:
        spec = importlib.util.spec_from_file_location("redact_baseline", baseline)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sides = {"baseline": module.redact_case, **sides}
    cases = [it.case for it in load_ragtruth() + load_frank()]
    chars = statistics.mean(len(c.answer) + sum(len(x.text) for x in c.contexts) for c in cases)
    rounds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(7):
        for name, fn in sides.items():
            start = time.process_time()
            for case in cases:
                fn(case)
            rounds[name].append((time.process_time() - start) / len(cases) * 1000)
    print(f"\n### CPU per case ({len(cases)} cases, {chars:.0f} characters on average)\n")
    for name, ms in rounds.items():
        print(
            f"{name}: median {statistics.median(ms):.3f} ms (min {min(ms):.3f}, max {max(ms):.3f})"
        )


def _kinds(text: str) -> list[str]:
    import re

    return re.findall(r"\[([A-Z_]+)_\d+\]", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agreement", action="store_true", help="also the shared labelled data")
    parser.add_argument("--speed", action="store_true", help="CPU per case on the shared data")
    parser.add_argument("--baseline", help="a redact.py to time beside the current one")
    args = parser.parse_args()
    independent()
    generated()
    if args.agreement:
        agreement()
    if args.speed:
        speed(args.baseline)


if __name__ == "__main__":
    main()
