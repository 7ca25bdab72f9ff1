"""GET /api/certifications through the running server: a cascade rubric's stored
certifications with their status (as `evaluator certify --json`), an unknown rubric 404 and
an unknown parameter 400 from the one exit-code table, POST not a route (404); the page's
Certifications table in headless Chromium."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from evaluator.config.rubrics import load_rubrics
from evaluator.store import certifications as certs
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from evaluator.web.server import start_in_thread
from evaluator.worker.cascade_routing import rubrics_now
from judges.types import Clients

from .test_server import _chrome_args

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def _row(stratum: str, at: datetime, threshold: float | None) -> certs.CertificationRecord:
    return certs.CertificationRecord(
        id="", rubric="faithfulness", stage="2.1", judge_epoch="e1", prompt_version="v1",
        stratum=stratum, alpha=0.05, delta=0.1, threshold=threshold, labels=400, clusters=380,
        failing=120, misses=0, decided_share=0.31, fail_given_pass_upper=0.04, look=400,
        created_at=at, saved_judge_calls=7,
    )  # fmt: skip


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    store = Store(f"sqlite:///{tmp_path / 'certs.db'}")
    active = certs.write(store.engine, _row("qa", T0, 0.9))
    gone = certs.write(store.engine, _row("summary", T0 + timedelta(hours=1), 0.8))
    certs.withdraw(store.engine, gone.id, "monitor: misses over alpha", T0 + timedelta(hours=2))
    assert active.id != gone.id
    with Session(store.engine) as session:  # scores, so the page has a line to draw
        for i in range(6):
            session.add(EvalRecord(trace_id=f"t{i}", rubric="faithfulness", rubric_version="1",
                                   scorer="faithfulness", status="ok", score=0.5 + i / 20,
                                   passed=i > 1, prompt_version="v1",
                                   created_at=datetime.now(UTC) - timedelta(minutes=i)))  # fmt: skip
        session.commit()
    server = start_in_thread(store, thresholds={"faithfulness": 0.5})
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    store.close()


def test_certifications_of_a_rubric(base: str) -> None:
    reply = httpx.get(f"{base}/api/certifications", params={"rubric": "faithfulness"})
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    status = {c["stratum"]: c["status"] for c in doc["certifications"]}
    assert status == {"qa": "active", "summary": "withdrawn"}
    assert doc["summary"] == {"active": 1, "withdrawn": 1, "saved_judge_calls": 14}
    qa = next(c for c in doc["certifications"] if c["stratum"] == "qa")
    assert qa["threshold"] == 0.9 and qa["guarantee"] == "P(miss) <= 0.05 with confidence 0.9"


def test_mistakes_answer_from_the_table(base: str) -> None:
    unknown = httpx.get(f"{base}/api/certifications", params={"rubric": "nosuch"})
    assert unknown.status_code == 404 and "nosuch" in unknown.json()["error"]
    bad = httpx.get(f"{base}/api/certifications", params={"rubric": "faithfulness", "x": "1"})
    assert bad.status_code == 400 and bad.json()["error"]
    post = httpx.post(f"{base}/api/certifications", content=b"{}")
    assert post.status_code == 404


def test_the_page_lists_them(base: str, tmp_path: Path) -> None:
    url = f"{base}/?rubric=faithfulness"
    args = [*_chrome_args(tmp_path / "profile"), "--dump-dom", url]
    html = subprocess.run(args, capture_output=True, text=True, timeout=90).stdout
    assert 'data-ready="1"' in html, html[-2000:]
    rows = re.findall(r'<tr class="cert-row">(.*?)</tr>', html)
    cells = [re.findall(r"<td>([^<]*)</td>", row) for row in rows]
    assert sorted((c[0], c[2], c[3]) for c in cells) == [
        ("qa", "active", "0.900"),
        ("summary", "withdrawn: monitor: misses over alpha", "0.800"),
    ], cells
    # Share decided locally, the bound on P(fail | passed locally), judge calls saved.
    assert all(c[5] == "31%" and c[6].startswith("4%") and c[7] == "7" for c in cells), cells


def test_a_cascade_without_a_judge_is_shown_as_advisory(tmp_path: Path) -> None:
    rubric = load_rubrics(ROOT / "rubrics").by_name("faithfulness")
    assert rubric is not None and rubric.resolved_method == "cascade"
    store = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    with Session(store.engine) as session:  # the rubric has a record, so it is known
        session.add(EvalRecord(trace_id="t0", rubric="faithfulness", rubric_version="1",
                               scorer="faithfulness", status="ok", score=0.9, passed=True))  # fmt: skip
        session.commit()
    now = rubrics_now([rubric], Clients(judge=None))
    server = start_in_thread(store, thresholds={"faithfulness": 0.8}, certification_now=now)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        doc = httpx.get(f"{base}/api/certifications", params={"rubric": "faithfulness"}).json()
        args = [*_chrome_args(tmp_path / "profile"), "--dump-dom", f"{base}/?rubric=faithfulness"]
        html = subprocess.run(args, capture_output=True, text=True, timeout=90).stdout
    finally:
        server.shutdown()
        server.server_close()
        store.close()
    assert doc["certifications"] == [] and doc["advisory"] and "advisory" in doc["advisory"]
    assert 'data-ready="1"' in html, html[-2000:]
    assert "advisory: " in html
