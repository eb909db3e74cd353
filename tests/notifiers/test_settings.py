"""HIVEMIND_NOTIFIER_ATTEMPTS, _BACKOFF and _TIMEOUT: defaults, taken values, refusals naming
the variable; and the backoff they make (doubling, capped at an hour)."""

from __future__ import annotations

import pytest

from hivemind.config import ConfigError, load_config
from notifiers import services


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"HIVEMIND_VAR_DIR": str(tmp_path / "var")}


def test_defaults_and_values(env):
    config = load_config(env)
    assert (config.notifier_attempts, config.notifier_backoff, config.notifier_timeout) == (6, 30, 10)
    env.update(HIVEMIND_NOTIFIER_ATTEMPTS="3", HIVEMIND_NOTIFIER_BACKOFF="1", HIVEMIND_NOTIFIER_TIMEOUT="120")
    config = load_config(env)
    assert (config.notifier_attempts, config.notifier_backoff, config.notifier_timeout) == (3, 1, 120)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("HIVEMIND_NOTIFIER_ATTEMPTS", "0", "from 1 to 20"),
        ("HIVEMIND_NOTIFIER_ATTEMPTS", "many", "expected a whole number"),
        ("HIVEMIND_NOTIFIER_BACKOFF", "3601", "from 1 to 3600"),
        ("HIVEMIND_NOTIFIER_TIMEOUT", "0", "from 1 to 120"),
    ],
)
def test_bad_values_name_the_variable(env, variable, value, problem):
    env[variable] = value
    with pytest.raises(ConfigError) as raised:
        load_config(env)
    assert str(raised.value).startswith(f"{variable}: ") and problem in str(raised.value)


def test_backoff_doubles_up_to_an_hour(settings):
    settings.NOTIFIER_BACKOFF = 30
    assert [services.backoff(n) for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
