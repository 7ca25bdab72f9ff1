from __future__ import annotations

from pathlib import Path

import pytest

from evaluator.config.settings import env_overrides, load_settings
from evaluator.errors import SettingsError


def test_defaults_load_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.database.url == "sqlite:///evaluator.db"
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.rubrics.path.is_dir()
    assert {p.stem for p in settings.rubrics.path.glob("*.toml")} >= {
        "faithfulness",
        "answer_relevance",
        "self_consistency",
    }
    assert not settings.judge.configured


def test_environment_overrides_with_prefix_and_double_underscore() -> None:
    settings = load_settings(
        environ={
            "EVALUATOR_JUDGE__BASE_URL": "http://127.0.0.1:8000/v1",
            "EVALUATOR_JUDGE__TIMEOUT_S": "12.5",
            "EVALUATOR_DATABASE__URL": "postgresql+psycopg://u@h/db",
            "EVALUATOR_REDIS__URL": "redis://10.0.0.1:6380/2",
            "EVALUATOR_SAMPLING__ALWAYS_ON_ERROR": "false",
        }
    )
    assert settings.judge.base_url == "http://127.0.0.1:8000/v1"
    assert settings.judge.timeout_s == 12.5
    assert settings.database.url.startswith("postgresql")
    assert settings.redis.url.endswith("/2")
    assert settings.sampling.always_on_error is False


def test_settings_file_changes_only_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[worker]\nmax_jobs = 3\n[pricing."my-judge"]\n'
        "input_per_mtok = 1.0\noutput_per_mtok = 2.0\n"
    )
    settings = load_settings(path, environ={})
    assert settings.worker.max_jobs == 3
    assert settings.worker.job_timeout_s == 300  # untouched default
    assert settings.cost_usd("my-judge", 1_000_000, 500_000) == pytest.approx(2.0)
    assert settings.cost_usd("unpriced", 10, 10) == 0.0


def test_settings_file_from_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[intake]\nbatch_size = 7\n")
    assert load_settings(environ={"EVALUATOR_SETTINGS": str(path)}).intake.batch_size == 7


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"EVALUATOR_JUDGE__TIMEOUT_S": "-1"}, "judge.timeout_s"),
        ({"EVALUATOR_SAMPLING__DEFAULT_RATE": "1.5"}, "sampling.default_rate"),
        ({"EVALUATOR_REDIS__URL": "http://x"}, "redis.url"),
        ({"EVALUATOR_JUDGE__RESPONSE_FORMAT": "xml"}, "judge.response_format"),
        ({"EVALUATOR_JUDGE__BASEURL": "x"}, "judge.baseurl"),
    ],
)
def test_bad_value_names_the_key(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(environ=env)
    assert names in str(err.value)


def test_job_timeout_must_fit_the_judge_worst_case() -> None:
    with pytest.raises(SettingsError, match=r"worker\.job_timeout_s"):
        load_settings(
            environ={
                "EVALUATOR_JUDGE__BASE_URL": "http://j/v1",
                "EVALUATOR_JUDGE__TIMEOUT_S": "120",
                "EVALUATOR_WORKER__JOB_TIMEOUT_S": "60",
            }
        )


def test_missing_or_broken_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[judge\n")
    with pytest.raises(SettingsError, match="invalid TOML"):
        load_settings(broken, environ={})


def test_env_overrides_parse_toml_literals() -> None:
    tree = env_overrides({"EVALUATOR_A__B": "3", "EVALUATOR_A__C": "hello", "OTHER": "x"})
    assert tree == {"a": {"b": 3, "c": "hello"}}
