"""Judge hygiene: warning signs that a judge's verdicts are biased, whatever their accuracy.

* self-preference: the judge is the generator's own model, or the same family (judges tend
  to prefer their own family's answers);
* verbosity bias: the score correlates with answer length (Spearman's rho), which a judge
  of faithfulness should not show by itself.

    >>> model_family("gpt-4o-mini-2024-07-18"), model_family("meta-llama/Llama-3.1-70B")
    ('gpt', 'llama')
    >>> same_family("gpt-4o", "gpt-4.1-mini"), same_family("gpt-4o", "claude-3-5-sonnet")
    (True, False)
    >>> round(spearman([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.35]), 2)
    1.0
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from judges.agreement import spearman

# Ordered: the first match names the family ("gpt-4o" before a bare "o" series).
_FAMILIES = (
    ("gpt", r"\bgpt|chatgpt"),
    ("openai-o", r"(?:^|/)o[1-9](?:-|$)"),
    ("claude", r"claude"),
    ("gemini", r"gemini|gemma"),
    ("llama", r"llama"),
    ("mistral", r"mistral|mixtral|ministral"),
    ("qwen", r"qwen"),
    ("deepseek", r"deepseek"),
    ("phi", r"\bphi-?\d"),
    ("command", r"command-r|cohere"),
)
VERBOSITY_RHO = 0.3  # |rho| above this is worth a look (a moderate rank correlation)


def model_family(model: str | None) -> str | None:
    if not model:
        return None
    name = model.lower()
    for family, pattern in _FAMILIES:
        if re.search(pattern, name):
            return family
    return None


def same_family(judge: str | None, generator: str | None) -> bool:
    if not judge or not generator:
        return False
    if judge.lower() == generator.lower():
        return True
    fj, fg = model_family(judge), model_family(generator)
    return fj is not None and fj == fg


def self_preference_warnings(judge_model: str | None, generator_models: Sequence[str]) -> list[str]:
    """One warning per generator model that is the judge's own model or family.

    >>> self_preference_warnings("gpt-4o-mini", ["gpt-4o", "claude-3-haiku"])[0][:42]
    "the judge 'gpt-4o-mini' is the generator's"
    """
    return [
        f"the judge {judge_model!r} is the generator's own model or family ({gen!r}): "
        "judges tend to prefer their own family's answers; use another family's judge"
        for gen in sorted(set(generator_models))
        if same_family(judge_model, gen)
    ]


def hygiene_warnings(
    judge_model: str | None,
    generator_models: Sequence[str],
    lengths: Sequence[int],
    scores: Sequence[float],
) -> list[str]:
    """Plain-language warnings for `evaluator calibrate` (worker start-up uses the first
    half, `self_preference_warnings`: it has no labelled scores to correlate)."""
    out = self_preference_warnings(judge_model, generator_models)
    rho = spearman([float(n) for n in lengths], list(scores))
    if abs(rho) > VERBOSITY_RHO:
        out.append(
            f"scores correlate with answer length (Spearman rho {rho:+.2f}): check the rubric "
            "for verbosity bias before trusting differences between prompt versions"
        )
    return out
