"""The pure parts of a rule: matchers, window aggregations, templates; and HIVEMIND_ALERT_INTERVAL."""

from __future__ import annotations

import pytest

from alerting import expressions as ex
from hivemind.config import ConfigError, load_config


def test_matchers_match_whole_values_and_refuse_bad_regular_expressions():
    matchers = ex.parse_matchers(
        [{"label": "app", "op": "=~", "value": "web|api"}, {"label": "node", "op": "!=", "value": "n1"}]
    )
    assert ex.matches_all(matchers, {"app": "web", "node": "n2"})
    assert not ex.matches_all(matchers, {"app": "webapp", "node": "n2"})  # anchored, as in PromQL
    assert not ex.matches_all(matchers, {"app": "api", "node": "n1"})
    assert ex.parse_matchers([{"label": "zone", "op": "!~", "value": ".+"}])[0].matches({})  # missing = ""
    for raw, field in [
        ([{"label": "app", "op": "=~", "value": "(unclosed"}], "matchers[0].value"),
        ([{"label": "app", "op": "~", "value": "x"}], "matchers[0].op"),
        ([{"label": "1app", "op": "=", "value": "x"}], "matchers[0].label"),
        ([{"label": "app", "value": "x", "extra": 1}], "matchers[0]"),
        ("app=web", "matchers"),
    ]:
        with pytest.raises(ex.ExpressionError) as refused:
            ex.parse_matchers(raw)
        assert refused.value.field == field


def test_aggregations():
    samples = [(0.0, 10.0), (15.0, 20.0), (30.0, 5.0), (45.0, 15.0)]
    assert ex.aggregate("avg", samples) == 12.5
    assert (ex.aggregate("min", samples), ex.aggregate("max", samples)) == (5, 20)
    assert (ex.aggregate("sum", samples), ex.aggregate("count", samples), ex.aggregate("last", samples)) == (50, 4, 15)
    assert ex.aggregate("increase", samples) == 10 + 5 + 10  # 20 -> 5 is a reset: 5 counted
    assert ex.aggregate("rate", samples) == 25 / 45
    assert ex.aggregate("rate", samples[:1]) is None
    assert ex.aggregate("avg", []) is None
    combined = ex.combine_by("max", ["app"], [({"app": "a", "r": "0"}, 1.0), ({"app": "a", "r": "1"}, 3.0)])
    assert combined == [({"app": "a"}, 3.0)]


def test_templates_read_only_what_they_name():
    text = "{{ labels.app }} at {{ value }} (limit {{threshold}}) in {{ rule.name }}/{{ rule.severity }}"
    ex.check_template(text, "annotations.summary")
    rendered = ex.render(
        text, labels={"app": "web"}, value=0.91234, threshold=1, rule={"name": "r", "severity": "info"}
    )
    assert rendered == "web at 0.9123 (limit 1) in r/info"
    for bad in ["{{ value.__class__ }}", "{{ labels }}", "{{ settings.SECRET_KEY }}", "{{ value", "{% if x %}{{x}}"]:
        with pytest.raises(ex.ExpressionError) as refused:
            ex.check_template(bad, "annotations.summary")
        assert refused.value.field == "annotations.summary"


def test_alert_interval_is_validated():
    assert load_config({}).alert_interval == 15
    assert load_config({"HIVEMIND_ALERT_INTERVAL": "60"}).alert_interval == 60
    for bad in ("0", "soon", "100000"):
        with pytest.raises(ConfigError) as refused:
            load_config({"HIVEMIND_ALERT_INTERVAL": bad})
        assert refused.value.variable == "HIVEMIND_ALERT_INTERVAL"
