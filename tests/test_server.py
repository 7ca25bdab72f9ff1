"""`evaluator serve`: the JSON API through a real HTTP client against the running server,
and the page rendered by headless Chromium (Debian's `chromium`) to a screenshot."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from evaluator.analytics.human_feedback import review_queue
from evaluator.store.models import AlertRecord, EvalRecord
from evaluator.store.store import Store
from evaluator.web.server import start_in_thread

_NOW = datetime.now(UTC)
# Each seeded day is 40 records spread over ~4.7 h before NOW: anchor them where one UTC day
# holds them whole (run just after midnight, day 0 would straddle two daily buckets).
NOW = (
    _NOW
    if _NOW.hour >= 5
    else _NOW.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(minutes=1)
)
THRESHOLDS = {"faith": 0.7}  # the seeded records pass at 0.7


def seed(store: Store) -> None:
    rows = []
    for day in range(7):
        for i in range(40):
            at = NOW - timedelta(days=day, minutes=7 * i + 5)
            for pv, base in (("v17", 0.93), ("v18", 0.93 - (0.25 if day < 2 else 0))):
                if pv == "v18" and day > 3:
                    continue
                score = max(0.0, min(1.0, base + ((i * 37) % 11 - 5) / 40))
                rows.append(
                    EvalRecord(
                        trace_id=f"{pv}-{day}-{i}-{uuid.uuid4().hex[:6]}",
                        rubric="faith",
                        rubric_version="1",
                        scorer="faithfulness",
                        status="ok",
                        score=score,
                        passed=score >= 0.7,
                        prompt_version=pv,
                        model="gpt-4o",
                        feature="qa",
                        explanation=f"<b>claim {i}</b> unsupported",
                        created_at=at,
                    )
                )
    alerted = next(r.trace_id for r in rows if r.trace_id.startswith("v18-0-"))
    alert = AlertRecord(
        group_key="version|faith|v18",
        worst_traces=[{"trace_id": alerted, "score": 0.5}],
        kind="version",
        rubric="faith",
        labels={"prompt_version": "v18"},
        test="e-process",
        p_value=1e-5,
        message="faith [prompt_version=v18]: new version worse",
        opened_at=NOW - timedelta(days=1, hours=12),
    )
    with Session(store.engine) as session:
        session.add_all([*rows, alert])
        session.commit()


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    store = Store(f"sqlite:///{tmp_path / 'srv.db'}")
    seed(store)
    server = start_in_thread(store, "127.0.0.1", 0, thresholds=THRESHOLDS)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    store.close()


def test_api_serves_trends_alerts_and_worst_traces(server_url: str) -> None:
    with httpx.Client(base_url=server_url, timeout=10) as client:
        assert client.get("/api/rubrics").json() == {"rubrics": ["faith"]}
        doc = client.get("/api/trends", params={"rubric": "faith", "since": "7d"}).json()
        assert [g["key"] for g in doc["groups"]] == ["v17", "v18"]
        v18 = doc["groups"][1]
        assert v18["buckets"][-1]["mean"] < doc["groups"][0]["buckets"][-1]["mean"] - 0.1
        alerts = client.get("/api/alerts", params={"open": "1"}).json()["alerts"]
        assert [a["kind"] for a in alerts] == ["version"]
        last = v18["buckets"][-1]
        end = (datetime.fromisoformat(last["start"]) + timedelta(days=1)).isoformat()
        worst = client.get(
            "/api/worst",
            params={
                "rubric": "faith",
                "by": "prompt_version",
                "key": "v18",
                "start": last["start"],
                "end": end,
            },
        ).json()["traces"]
        assert len(worst) == 5 and all(t["trace_id"].startswith("v18-") for t in worst)
        assert worst == sorted(worst, key=lambda t: t["score"])
        bad = client.get("/api/trends", params={"rubric": "faith", "bucket": "10m"})
        assert bad.status_code == 400 and "whole number of hours" in bad.json()["error"]
        assert client.get("/api/trends").status_code == 400
        assert client.get("/nope").status_code == 404
        page = client.get("/")
        assert page.status_code == 200 and "app.js" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]


def test_review_queue_is_served_as_the_cli_computes_it_and_writes_nothing(
    server_url: str, tmp_path: Path
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'srv.db'}")

    def counts() -> tuple[int, ...]:
        with store.engine.connect() as conn:
            tables = ("eval_records", "alerts", "feedback", "eval_rollups")
            return tuple(
                conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one() for t in tables
            )

    before = counts()
    with httpx.Client(base_url=server_url, timeout=10) as client:
        queue = client.get("/api/review", params={"rubric": "faith", "n": "30"}).json()["queue"]
        assert client.get("/api/review", params={"n": "0"}).status_code == 400
        assert client.get("/api/review", params={"rubric": "faith", "x": "1"}).status_code == 400
    expected = [i.to_json() for i in review_queue(store, THRESHOLDS, rubric="faith", n=30)]
    assert queue == expected and len(queue) == 30
    assert all(item["reasons"] for item in queue)  # each proposal says why
    assert queue[0]["reasons"][-1] == "in an open alert's worst traces"
    assert all("uncertain: score" in r for i in queue[1:] for r in i["reasons"])
    assert counts() == before
    store.close()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser() -> str:
    """Chromium; without it the page test is skipped with the reason (the README's
    `python -m pytest` passes on a machine without it), except under CI=true (.ci/run
    installs it), where it fails: CI never passes by skipping the page. Set
    EVALUATOR_SKIP_BROWSER=1 to skip it on purpose."""
    if os.environ.get("EVALUATOR_SKIP_BROWSER") == "1":
        pytest.skip("EVALUATOR_SKIP_BROWSER=1")
    found = _chromium()
    if found is None:
        why = "headless Chromium not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {why}", pytrace=False)
        pytest.skip(why)
    return found


def _chrome_args(profile: Path) -> list[str]:
    return [
        _browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
    ]


def test_page_renders_lines_bands_and_alerts_in_headless_chromium(
    server_url: str, tmp_path: Path
) -> None:
    shot, profile = tmp_path / "trends.png", tmp_path / "profile"
    base = _chrome_args(profile)
    url = f"{server_url}/?rubric=faith&since=7d&bucket=1d&click=1"
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    html = dom.stdout
    assert 'data-ready="1"' in html, dom.stderr[-2000:]
    assert html.count('class="line"') == 2 and html.count('class="band"') == 2
    assert 'class="alert-mark"' in html
    assert "v18-" in html  # the click-through listed the worst traces
    review = re.findall(r'<tr class="review-row" data-trace="([^"]+)">(.*?)</tr>', html)
    assert len(review) == 20, html[-3000:]  # the review queue, with a reason per trace
    assert "in an open alert's worst traces" in review[0][1]
    assert all("uncertain: score" in row or "alert" in row for _trace, row in review)
    assert "<b>claim" not in html and "&lt;b&gt;claim" in html  # untrusted text stays text
    run = subprocess.run(
        [*base, "--window-size=1000,900", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert shot.exists(), run.stderr[-2000:]
    assert _png_size(shot) == (1000, 900)
    # A blank page compresses to a few KB; lines, bands and text do not.
    assert shot.stat().st_size > 20_000


def test_page_right_after_a_demo_shows_the_rubric_its_line_and_overview(tmp_path: Path) -> None:
    # As after `evaluator demo`: records from the last minutes, no rollup yet, no cron.
    store = Store(f"sqlite:///{tmp_path / 'evaluator.db'}")
    with Session(store.engine) as session:
        for i in range(12):
            pv = "v1" if i % 2 else "v2"
            session.add(EvalRecord(trace_id=f"demo-{i}", rubric="faithfulness", rubric_version="1",
                                   scorer="faithfulness", status="ok", score=0.5 + i / 40,
                                   passed=i % 3 != 0, prompt_version=pv, judge_cost_usd=0.002,
                                   # v1 mixes rates (1 and 0.25): its ESS is below its n
                                   inclusion_probability=0.25 if i % 4 == 1 else 1.0,
                                   created_at=datetime.now(UTC) - timedelta(minutes=i)))  # fmt: skip
        session.commit()
    server = start_in_thread(store, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/?rubric=faithfulness"
        args = [*_chrome_args(tmp_path / "profile"), "--dump-dom", url]
        html = subprocess.run(args, capture_output=True, text=True, timeout=90).stdout
    finally:
        server.shutdown()
        server.server_close()
        store.close()
    assert 'data-ready="1"' in html, html[-2000:]
    assert "<option>faithfulness</option>" in html
    lines = re.findall(r'<path d="M([^"]+)"[^>]*class="line" data-points="(\d+)"', html)
    assert len(lines) == 2 and all(int(n) >= 2 and " L" in d for d, n in lines)
    assert html.count('class="band"') == 2
    # The effective sample size beside n: on each group (legend) and each point (tooltip).
    # v1 holds i = 1, 3, …, 11: weights 4, 1, 4, 1, 4, 1 → ESS 15² / 51 = 4.4 of n = 6.
    assert "v1 — mean" in html and "(n=6, ESS=4.4)" in html and "(n=6, ESS=6.0)" in html
    points = re.findall(r"<title>(v1 [^<]*)</title>", html)
    assert points and all(re.search(r"n=\d+, ESS=\d+\.\d", t) for t in points), points
    row = re.search(r'<tr class="overview-row" data-rubric="faithfulness">(.*?)</tr>', html)
    assert row is not None
    text = re.sub(r"<[^>]+>", "|", row.group(1))
    assert "v1: mean" in text and "v2: mean" in text and "pass" in text
    assert "$0.0240/day" in text  # 12 records x $0.002 in the last 24 h
    # Quality x cost: per prompt version, judge $ per answer that passed all its rubrics.
    cost = re.findall(r'<tr class="cost-row">(.*?)</tr>', html)
    cells = [re.findall(r"<td>([^<]*)</td>", row) for row in cost]
    assert [c[0] for c in cells] == ["v1", "v2"], cells
    assert all(c[5].startswith("$") for c in cells)  # both versions have passing answers
    assert "1h buckets" in html  # under a day of data: hourly
