"""One exit-code table, every surface: malformed invocations end in one line on stderr and
the code evaluator.errors.ExitCode gives their mistake — never a traceback — whatever the
command; the HTTP API answers the same mistakes with the statuses of the same table rows.

* tests/fixtures/malformed_invocations.json: the committed corpus (bad flags, files, ports,
  IDs, URLs), each case with its expected code;
* MATRIX: every command of the parser (a new command without a row fails the test) crossed
  with the mistakes that apply to it: a bad flag (2), no database (2), schema behind (4), an
  unknown rubric (2), Redis down (3);
* the HTTP API: unknown rubric 404, malformed 400, unavailable 503, schema behind 409.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlmodel import Session

from evaluator.cli import exit_codes
from evaluator.cli.main import build_parser, main
from evaluator.errors import (
    ERROR_EXITS,
    EXIT_TABLE,
    BudgetUnavailable,
    ExitCode,
    SchemaError,
    exit_code_for,
    http_status_for,
)
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store, make_engine
from evaluator.web.api import error_answer
from evaluator.web.server import start_in_thread
from tests.conftest import (
    FIXTURES,
    POSTGRES_URL,
    TONE_RUBRIC,
    make_settings,
    rag_trace,
    write_rubric,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = FIXTURES / "malformed_invocations.json"


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "evaluator.cli", *args],
        capture_output=True, text=True, env=full_env, timeout=60, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture
def settings_file(tmp_path: Path, redis_url: str) -> Path:
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    make_settings(tmp_path, redis_url)
    return tmp_path / "settings.toml"


def _ragtruth(source_id: str) -> dict[str, Any]:
    return {"source_id": source_id, "source": {"question": "Q?", "passages": "passage 1: A."},
            "responses": [{"model": "m", "response": "A.", "labels": []}]}  # fmt: skip


def _workspace(tmp: Path, settings: Path) -> dict[str, str]:
    """The files and database the cases name; returns the placeholders' values."""
    url = f"sqlite:///{tmp / 'evals.db'}"
    store = Store(url)  # migrated; records of rubric tone at prompt versions v1 and v2
    now = datetime.now(UTC)
    with Session(store.engine) as s:
        for i, version in enumerate(["v1", "v2"] * 3):
            s.add(EvalRecord(trace_id=f"t{i}", span_id="c", rubric="tone", rubric_version="1",
                             scorer="llm_rubric", status="ok", score=1.0, passed=True,
                             prompt_version=version, created_at=now - timedelta(hours=1)))  # fmt: skip
        s.commit()
    store.close()
    (tmp / "ok.jsonl").write_text(json.dumps(rag_trace("ok-1")) + "\n")
    (tmp / "not_utf8.txt").write_bytes(b"\xff\xfe not utf-8")
    (tmp / "bad.toml").write_text("[database\nurl = 1\n")
    (tmp / "badkey.toml").write_text('[databse]\nurl = "sqlite:///x.db"\n')
    (tmp / "badvalue.toml").write_text("[worker]\nmax_jobs = -3\n")
    good = json.dumps(_ragtruth("1")) + "\n"
    (tmp / "ragtruth_ok.jsonl").write_text(good)
    no_id = {k: v for k, v in _ragtruth("2").items() if k != "source_id"}
    (tmp / "ragtruth_no_source_id.jsonl").write_text(good + json.dumps(no_id) + "\n")
    (tmp / "ragtruth_not_json.jsonl").write_text(good + "{not json\n")
    (tmp / "fb.jsonl").write_text(json.dumps({"trace_id": "t0", "value": "up"}) + "\n")
    (tmp / "adir").mkdir()
    sqlite3.connect(tmp / "old.db").close()  # an empty file: behind every revision
    missing_db = make_url(POSTGRES_URL).set(database=f"evaluator_missing_{uuid.uuid4().hex[:8]}")
    return {"{settings}": str(settings), "{tmp}": str(tmp),
            "{pg_missing_db}": missing_db.render_as_string(hide_password=False)}  # fmt: skip


def _fill(value: Any, places: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_fill(v, places) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, places) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    for key, real in places.items():
        value = value.replace(key, real)
    return value


# Every command: a valid invocation (`base`), and which mistakes apply with the code each
# must give. None: the mistake does not apply (writers create and migrate their database;
# a command without --rubric has no unknown rubric; only some commands talk to Redis).
NEVER = {"EVALUATOR_DATABASE__URL": "sqlite:///{tmp}/never.db"}
OLD = {"EVALUATOR_DATABASE__URL": "sqlite:///{tmp}/old.db"}
NOWHERE = {"EVALUATOR_REDIS__URL": "redis://127.0.0.1:1/0"}
READ = {"no_database": 2, "schema_behind": 4}
MATRIX: dict[str, dict[str, Any]] = {
    "ingest": {"base": ["{tmp}/ok.jsonl"]},
    "enqueue": {"base": ["t1"], "redis_down": 3},
    "worker": {"base": ["--burst"], "redis_down": 3},
    "rubrics check": {"base": []},
    "demo": {"base": []},
    "calibrate": {"base": ["--rubric", "tone", "--data", "{tmp}/ok.jsonl"],
                  "unknown_rubric": ["--rubric", "nosuch", "--data", "{tmp}/ok.jsonl"]},
    "convert-ragtruth": {"base": ["{tmp}/ragtruth_ok.jsonl", "{tmp}/conv.jsonl"]},
    "scores": {"base": [], **READ, "unknown_rubric": ["--rubric", "nosuch"]},
    "stats": {"base": [], **READ, "redis_down": 3},
    "trends": {"base": ["--rubric", "tone"], **READ, "unknown_rubric": ["--rubric", "nosuch"]},
    "alerts": {"base": [], **READ, "unknown_rubric": ["--rubric", "nosuch"]},
    "serve": {"base": ["--port", "0"]},
    "retry": {"base": ["--list"], **READ, "unknown_rubric": ["--errors", "--rubric", "nosuch"]},
    "health": {"base": []},
    "db upgrade": {"base": []},
    "db current": {"base": [], "no_database": 2, "schema_behind": 1},  # 1: "behind" is its answer
    "backfill": {"base": ["--since", "7d", "--dry-run"], **READ,
                 "unknown_rubric": ["--since", "7d", "--rubric", "nosuch", "--dry-run"]},
    "gate": {"base": ["--rubric", "tone", "--candidate", "v2", "--baseline", "v1"], **READ,
             "unknown_rubric": ["--rubric", "nosuch", "--candidate", "v2", "--baseline", "v1"]},
    "dataset export": {"base": ["{tmp}/m.jsonl", "--rubric", "tone"], **READ,
                       "unknown_rubric": ["{tmp}/m.jsonl", "--rubric", "nosuch"]},
    "epochs": {"base": [], **READ, "unknown_rubric": ["--rubric", "nosuch"]},
    "certify": {"base": ["--rubric", "tone"], **READ, "unknown_rubric": ["--rubric", "nosuch"]},
    "feedback import": {"base": ["{tmp}/fb.jsonl"]},
    "feedback agreement": {"base": ["--rubric", "tone"], **READ,
                           "unknown_rubric": ["--rubric", "nosuch"]},
    "review next": {"base": [], **READ, "unknown_rubric": ["--rubric", "nosuch"]},
    "erase": {"base": ["--trace", "t1"], **READ},
    "retention run": {"base": ["--dry-run"], **READ},
}  # fmt: skip


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
    """Every leaf command of the parser, as typed ("db upgrade")."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return [c for name, sub in action.choices.items() for c in commands(sub, (*path, name))]
    return [" ".join(path)]


def matrix_cases() -> list[dict[str, Any]]:
    cases = []
    for command, row in MATRIX.items():
        words, base = command.split(), row["base"]
        s = ["--settings", "{settings}"]
        cases.append({"class": "matrix:bad_flag", "args": [*s, *words, *base, "--no-such-flag"],
                      "code": 2, "says": "unrecognized arguments"})  # fmt: skip
        for mistake, env, says in (("no_database", NEVER, "no database at"),
                                   ("schema_behind", OLD, "")):  # fmt: skip
            if row.get(mistake) is not None:
                cases.append({"class": f"matrix:{mistake}", "args": [*s, *words, *base],
                              "env": env, "code": row[mistake], "says": says})  # fmt: skip
        if row.get("unknown_rubric") is not None:
            cases.append({"class": "matrix:unknown_rubric", "code": 2,
                          "args": [*s, *words, *row["unknown_rubric"]]})  # fmt: skip
        if row.get("redis_down") is not None:
            cases.append({"class": "matrix:redis_down", "args": [*s, *words, *base],
                          "env": NOWHERE, "code": row["redis_down"], "says": "cannot reach Redis"})  # fmt: skip
    return cases


# Runs every case through main() inside ONE child process (a hundred interpreter start-ups
# take minutes on a small CI machine); whatever escapes main() is recorded as a traceback.
CHILD = """
import contextlib, io, json, os, sys, traceback
from evaluator.cli.main import main
out = []
for case in json.load(sys.stdin):
    saved = dict(os.environ)
    os.environ.update(case.get("env", {}))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(case["args"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        code, _ = -1, err.write(traceback.format_exc())
    os.environ.clear()
    os.environ.update(saved)
    out.append({"code": int(code), "stderr": err.getvalue()})
print(json.dumps(out))
"""


def test_every_command_and_the_corpus_give_the_tables_code_in_one_line(
    tmp_path: Path, settings_file: Path
) -> None:
    assert sorted(commands(build_parser())) == sorted(MATRIX), "a command without a MATRIX row"
    corpus = json.loads(CORPUS.read_text())["cases"]
    assert len(corpus) >= 65
    assert {c["class"] for c in corpus} == {"flags", "files", "ports", "ids", "urls"}
    places = _workspace(tmp_path, settings_file)
    cases = _fill(corpus + matrix_cases(), places)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD], input=json.dumps(cases), capture_output=True,
        text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    results = json.loads(child.stdout.splitlines()[-1])
    bad = []
    for case, r in zip(cases, results, strict=True):
        # Log records are their own channel (--log-level ERROR hides them); the rest is one line.
        lines = [x for x in r["stderr"].strip().splitlines() if not x.startswith("WARNING ")]
        error = case["code"] in ERROR_EXITS  # an answer (1: "behind") needs no stderr line
        ok = (
            "Traceback" not in r["stderr"]
            and r["code"] == case["code"]
            and (len(lines) == 1 or not error)
            and case.get("says", "") in r["stderr"]
        )
        if not ok:
            bad.append(f"{case['class']} {case['args']} {case.get('env', '')}: want "
                       f"{case['code']}, rc={r['code']} stderr={r['stderr'][-500:]!r}")  # fmt: skip
    assert not bad, f"{len(bad)} of {len(cases)} cases:\n" + "\n".join(bad)
    # Readers created nothing; the failed conversions left no output, partial or whole.
    assert not (tmp_path / "never.db").exists()
    assert (
        sqlite3.connect(tmp_path / "old.db").execute("SELECT * FROM sqlite_master").fetchall() == []
    )
    assert not (tmp_path / "out.jsonl").exists()
    assert not list(tmp_path.glob(".*.partial"))


def test_the_http_api_answers_the_same_mistakes_from_the_same_rows(
    tmp_path: Path, settings_file: Path
) -> None:
    """Same mistake, same row of the table: the CLI's code for it (MATRIX, corpus) and the
    API's status for it are in one EXIT_TABLE row."""
    _workspace(tmp_path, settings_file)
    store = Store(f"sqlite:///{tmp_path / 'evals.db'}")
    server = start_in_thread(store, thresholds={"tone": 0.75})
    base = f"http://127.0.0.1:{server.server_address[1]}"
    day = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    window = {"start": day, "end": datetime.now(UTC).isoformat()}
    asked = {
        # unknown rubric: exit 2 on the command line
        ("/api/trends", (("rubric", "nosuch"),)): (ExitCode.USAGE, 404),
        ("/api/alerts", (("rubric", "nosuch"),)): (ExitCode.USAGE, 404),
        ("/api/review", (("rubric", "nosuch"),)): (ExitCode.USAGE, 404),
        ("/api/worst", (("rubric", "nosuch"), *window.items())): (ExitCode.USAGE, 404),
        # malformed values and flags: exit 2
        ("/api/trends", (("rubric", "tone"), ("by", "colour"))): (ExitCode.USAGE, 400),
        ("/api/trends", (("rubric", "tone"), ("since", "forever"))): (ExitCode.USAGE, 400),
        ("/api/cost", (("since", "soon"),)): (ExitCode.USAGE, 400),
        ("/api/alerts", (("bogus", "1"),)): (ExitCode.USAGE, 400),
        ("/api/review", (("n", "x"),)): (ExitCode.USAGE, 400),
        # what is right answers
        ("/api/trends", (("rubric", "tone"),)): (ExitCode.OK, 200),
        ("/api/alerts", (("rubric", "tone"),)): (ExitCode.OK, 200),
    }
    try:
        got = {key: httpx.get(base + key[0], params=dict(key[1])) for key in asked}
        # the database goes away under a running server: 503, as exit 3
        store.engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
        gone = httpx.get(f"{base}/api/alerts")
    finally:
        server.shutdown()
        server.server_close()
        store.close()
    rows = {row.code: row for row in EXIT_TABLE}
    for key, (code, status) in asked.items():
        reply = got[key]
        assert reply.status_code == status, (key, reply.text)
        assert status in rows[code].http
        if status != 200:
            assert "error" in reply.json() and "Traceback" not in reply.text
    assert (
        got[("/api/trends", (("rubric", "nosuch"),))]
        .json()["error"]
        .startswith("no rubric named 'nosuch'")
    )
    assert gone.status_code == 503 and 503 in rows[ExitCode.UNAVAILABLE].http
    # Schema behind: the server migrates at start, so no request meets it; the mapping is
    # the table's (exit 4 on the command line).
    assert error_answer(SchemaError("behind")) == (409, "behind")
    assert 409 in rows[ExitCode.SCHEMA].http


def test_a_budget_that_cannot_be_rebuilt_is_unavailable_not_a_traceback() -> None:
    """backfill and retry admit through the budget: counters that cannot be rebuilt from SQL
    (another worker's rebuild after a Redis restart did not finish) exit 3 / answer 503."""
    exc = BudgetUnavailable("another worker's rebuild of the budget counters did not finish")
    assert exit_code_for(exc) == ExitCode.UNAVAILABLE
    assert http_status_for(exc) == 503


def test_decision_exits_never_overlap_error_exits() -> None:
    from evaluator.errors import (
        DECISION_EXITS,
        ERROR_EXITS,
        EXIT_NO_WORSE,
        EXIT_UNDECIDED,
        EXIT_WORSE,
    )

    assert (EXIT_NO_WORSE, EXIT_WORSE, EXIT_UNDECIDED) == (0, 1, 6)
    assert DECISION_EXITS.isdisjoint(ERROR_EXITS)
    assert sorted(ERROR_EXITS) == [2, 3, 4, 5]
    assert len({row.code for row in EXIT_TABLE}) == len(EXIT_TABLE) == len(ExitCode)


def test_trends_for_an_unknown_rubric_names_the_known_ones(
    settings_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--settings", str(settings_file), "db", "upgrade"]) == 0
    code = main(["--settings", str(settings_file), "trends", "--rubric", "tones"])
    err = capsys.readouterr().err
    assert code == exit_codes.USAGE
    assert "no rubric named 'tones'; did you mean 'tone'? known: tone" in err


def test_read_commands_do_not_migrate_an_old_database(settings_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "evals.db"
    sqlite3.connect(db).close()  # an empty file: "older" than every revision
    for command in (["scores"], ["trends", "--rubric", "tone"], ["alerts"]):
        r = run(["--settings", str(settings_file), *command])
        assert r.returncode == exit_codes.SCHEMA, r.stderr
        assert "database schema is at no revision" in r.stderr
        assert "run `evaluator db upgrade`" in r.stderr
    tables = sqlite3.connect(db).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == []
    (tmp_path / "none.jsonl").write_text("")
    assert main(["--settings", str(settings_file), "ingest", str(tmp_path / "none.jsonl")]) == 0
    assert sqlite3.connect(db).execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_a_closed_pipe_is_quiet(settings_file: Path) -> None:
    assert main(["--settings", str(settings_file), "db", "upgrade"]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = f"{sys.executable} -m evaluator.cli --settings {settings_file} health | head -c 1"
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, env=env, timeout=60)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def test_exit_codes_are_in_the_help_epilog() -> None:
    text = build_parser().format_help()
    assert "exit codes:" in text and "4    the database schema is behind" in text
    for row in EXIT_TABLE:  # generated from the table: every code is listed
        assert f"\n  {int(row.code):<5}" in text
