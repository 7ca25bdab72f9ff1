"""Malformed invocations end in one line on stderr and a documented exit code, never a
traceback; read-only commands never migrate; a closed pipe is quiet."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from evaluator.cli import exit_codes
from evaluator.cli.main import build_parser, main
from tests.conftest import TONE_RUBRIC, make_settings, write_rubric

ROOT = Path(__file__).resolve().parent.parent


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


def malformed(tmp: Path, s: str) -> list[tuple[list[str], dict[str, str]]]:
    bad_toml = tmp / "bad.toml"
    bad_toml.write_text("[database\nurl = 1\n")
    bad_key = tmp / "badkey.toml"
    bad_key.write_text('[databse]\nurl = "sqlite:///x.db"\n')
    bad_value = tmp / "badvalue.toml"
    bad_value.write_text("[worker]\nmax_jobs = -3\n")
    not_json = tmp / "traces.txt"
    not_json.write_bytes(b"\xff\xfe not utf-8")
    nowhere = {"EVALUATOR_REDIS__URL": "redis://127.0.0.1:1/0"}
    wrong_pg = {"EVALUATOR_DATABASE__URL": "postgresql://nobody@127.0.0.1:1/none"}
    wrong_scheme = {"EVALUATOR_DATABASE__URL": "mysql+nosuchdriver://x/y"}
    no_dir = {"EVALUATOR_DATABASE__URL": "sqlite:////nonexistent/dir/x.db"}
    S = ["--settings", s]
    return [
        (["--no-such-flag"], {}),
        (["nosuchcommand"], {}),
        ([], {}),
        ([*S, "scores", "--limit", "x"], {}),
        ([*S, "scores", "--limit", "0"], {}),
        ([*S, "scores", "--status", "weird"], {}),
        ([*S, "scores", "--after", "not-a-cursor"], {}),
        ([*S, "scores", "--bogus"], {}),
        ([*S, "trends"], {}),
        ([*S, "trends", "--rubric", "tone", "--by", "colour"], {}),
        ([*S, "trends", "--rubric", "tone", "--since", "forever"], {}),
        ([*S, "trends", "--rubric", "tone", "--bucket", "7m"], {}),
        ([*S, "alerts", "--limit", "many"], {}),
        ([*S, "ingest"], {}),
        ([*S, "ingest", str(tmp / "missing.jsonl")], {}),
        ([*S, "enqueue", "--from-file", str(tmp / "missing.txt")], {}),
        ([*S, "enqueue", "--feedback", "bad", "t1"], {}),
        ([*S, "enqueue"], {}),
        ([*S, "calibrate"], {}),
        ([*S, "calibrate", "--rubric", "tone", "--data", str(tmp / "missing.jsonl")], {}),
        ([*S, "calibrate", "--rubric", "nosuch", "--data", str(not_json)], {}),
        ([*S, "convert-ragtruth", str(tmp / "missing.jsonl"), str(tmp / "out.jsonl")], {}),
        ([*S, "convert-ragtruth", str(not_json), str(tmp / "out.jsonl")], {}),
        ([*S, "rubrics", "check", str(tmp / "nodir")], {}),
        ([*S, "rubrics"], {}),
        ([*S, "db"], {}),
        ([*S, "backfill", "--since", "yesterday-ish"], {}),
        ([*S, "serve", "--port", "http"], {}),
        (["--settings", str(tmp / "missing.toml"), "scores"], {}),
        (["--settings", str(bad_toml), "scores"], {}),
        (["--settings", str(bad_key), "stats"], {}),
        (["--settings", str(bad_value), "health"], {}),
        ([*S, "--log-format", "xml", "scores"], {}),
        ([*S, "scores"], wrong_pg),
        ([*S, "ingest", str(not_json)], wrong_pg),
        ([*S, "scores"], wrong_scheme),
        ([*S, "db", "upgrade"], no_dir),
        ([*S, "db", "current"], wrong_pg),
        ([*S, "stats"], nowhere),
        ([*S, "enqueue", "t1"], nowhere),
        ([*S, "retry"], {}),
        ([*S, "scores"], {"EVALUATOR_DATABASE__URL": "sqlite:///" + str(tmp / "never.db")}),
    ]


# Runs every case through main() inside ONE child process (40 interpreter start-ups take
# minutes on a small CI machine); whatever escapes main() is recorded as a traceback.
CHILD = """
import contextlib, io, json, os, sys, traceback
from evaluator.cli.main import main
out = []
for args, env in json.load(sys.stdin):
    saved = dict(os.environ)
    os.environ.update(env)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        code, _ = -1, err.write(traceback.format_exc())
    os.environ.clear()
    os.environ.update(saved)
    out.append({"code": code, "stderr": err.getvalue()})
print(json.dumps(out))
"""


def test_malformed_invocations_print_one_line_and_no_traceback(
    tmp_path: Path, settings_file: Path
) -> None:
    cases = malformed(tmp_path, str(settings_file))
    assert len(cases) >= 40
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD], input=json.dumps(cases), capture_output=True,
        text=True, env=env, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    results = json.loads(child.stdout.splitlines()[-1])
    documented = {exit_codes.FAIL, exit_codes.USAGE, exit_codes.UNAVAILABLE, exit_codes.SCHEMA}
    bad = []
    for (args, env_), r in zip(cases, results, strict=True):
        # Log records are their own channel (--log-level ERROR hides them); the rest is one line.
        lines = [x for x in r["stderr"].strip().splitlines() if not x.startswith("WARNING ")]
        if "Traceback" in r["stderr"] or r["code"] not in documented or len(lines) != 1:
            bad.append(f"{args} {env_}: rc={r['code']} stderr={r['stderr'][-600:]!r}")
    assert not bad, "\n".join(bad)
    assert not (tmp_path / "never.db").exists()  # a reader never creates a database


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
