"""Review (issue 28): changing a cascade's `audit_rate` must not orphan its certifications.

The shipped rubric tells users "Higher [audit_rate] certifies sooner". audit_rate decides only
which sessions the judge labels (like `sampling`, which keeps the epoch), never a verdict; but
the rubric hash covers every option, so raising it gives the rubric a new evaluator epoch: the
router's key (rubric, stage, judge epoch, prompt version, stratum) changes, every certification
in force stops applying, the stored labels are of another key, and the judge decides every
sampled trace again until the new key reaches its first checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from evaluator.config.rubrics import parse_rubric
from evaluator.worker.cascade_routing import key_of
from judges.llm.client import JudgeClient
from judges.types import Clients

SHIPPED = Path(__file__).resolve().parents[1] / "rubrics" / "faithfulness.toml"


def test_raising_audit_rate_keeps_the_certification_key() -> None:
    text = SHIPPED.read_text()
    assert "audit_rate = 0.1" in text
    before = parse_rubric(text, source=SHIPPED)
    after = parse_rubric(text.replace("audit_rate = 0.1", "audit_rate = 0.2"), source=SHIPPED)
    assert after.options["audit_rate"] == 0.2
    clients = Clients(judge=JudgeClient(base_url="http://judge.test/v1", model="m"))
    assert key_of(after, clients, "v1", "qa") == key_of(before, clients, "v1", "qa")
