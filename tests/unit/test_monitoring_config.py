"""The monitoring configuration (infra/prometheus, infra/grafana) checked by promtool and
against the metrics the code exports (app/observability/names.py).

The PromQL check is a light regex parse, enough to catch a renamed metric or label: the
``jobstack_*`` names, the labels of their ``{...}`` matchers, and the labels of ``by``,
``without``, ``on`` and ``ignoring`` clauses (taken as the union of the expression's
metrics' labels, since the regex does not know which metric an aggregation wraps).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.observability.names import (
    API_METRICS,
    HISTOGRAM_SUFFIXES,
    HISTOGRAMS,
    MESSAGE_KINDS,
    OUTCOMES,
    WORKER_METRICS,
)
from app.states import JobState
from tests.support.services import require

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "infra" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts_test.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "jobstack.json"

METRICS = {**WORKER_METRICS, **API_METRICS}
#: The histograms among the metrics: only they export HISTOGRAM_SUFFIXES series.
#: Labels whose values are a closed set: a matcher on them must name known values.
KNOWN_VALUES: dict[str, set[str]] = {
    "outcome": set(OUTCOMES),
    "kind": set(MESSAGE_KINDS),
    "state": set(JobState),
}

SELECTOR = re.compile(r"\b(jobstack_\w+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
#: Grafana's variables, replaced by values PromQL accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$queue": ".*"}


def labels_of(series: str) -> tuple[str, ...] | None:
    """The labels of an exported series name (a histogram's _bucket adds ``le``); None
    when the code exports no such series."""
    base = base_name(series)
    if base not in METRICS:
        return None
    return METRICS[base] + (("le",) if series.endswith("_bucket") and base != series else ())


def base_name(series: str) -> str:
    """The metric a series belongs to: a histogram's name for its _bucket, _sum, _count."""
    for base in HISTOGRAMS:
        if series in {base + suffix for suffix in HISTOGRAM_SUFFIXES}:
            return base
    return series


def promql_problems(expr: str) -> list[str]:
    """What in ``expr`` names a metric, a label or a label value the code does not export."""
    problems = []
    used_labels: set[str] = set()
    for series, matchers in SELECTOR.findall(expr):
        labels = labels_of(series)
        if labels is None:
            problems.append(f"unknown metric {series}")
            continue
        used_labels.update(labels)
        for label, operator, value in MATCHER.findall(matchers):
            if label not in labels:
                problems.append(f"{series} has no label {label}")
            elif (
                label in KNOWN_VALUES and operator in ("=", "=~") and re.fullmatch(r"[\w|]+", value)
            ):
                unknown = set(value.split("|")) - KNOWN_VALUES[label]
                if unknown:
                    problems.append(f"{series}: {label} is never {', '.join(sorted(unknown))}")
    for clause in GROUPING.findall(expr):
        for label in filter(None, (name.strip() for name in clause.split(","))):
            if label not in used_labels:
                problems.append(f"grouping by {label}, a label of none of {sorted(used_labels)}")
    return problems


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_dashboard() -> Any:
    return json.loads(DASHBOARD.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    return list(load_dashboard()["panels"])


def dashboard_queries() -> Iterator[str]:
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in load_dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["definition"]


def alert_test_series() -> Iterator[str]:
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for series in case["input_series"]:
            yield series["series"]


#: Where PromQL is written, and its expressions.
EXPRESSIONS: dict[str, Callable[[], list[str]]] = {
    "alerts.yml": lambda: [rule["expr"] for rule in alert_rules()],
    "alerts_test.yml": lambda: list(alert_test_series()),
    "jobstack.json": lambda: list(dashboard_queries()),
}


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    require(shutil.which("promtool") is not None, "promtool (Debian package prometheus)")
    return subprocess.run(
        ["promtool", *arguments],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_succeeded(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args}:\n{result.stdout}{result.stderr}"


def test_the_prometheus_config_and_its_rule_files_pass_promtool_check_config() -> None:
    assert_succeeded(promtool("check", "config", str(CONFIG)))


def test_the_alert_rules_pass_promtool_check_rules() -> None:
    assert_succeeded(promtool("check", "rules", str(ALERTS)))


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    assert_succeeded(promtool("test", "rules", str(ALERT_TESTS)))


def test_every_dashboard_query_is_promql_that_promtool_accepts(tmp_path: Path) -> None:
    queries = list(dashboard_queries())
    rules = []
    for number, query in enumerate(queries):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        if query.startswith("label_values("):
            query = query.removeprefix("label_values(").split(",")[0]
        rules.append({"record": f"dashboard:query_{number}", "expr": query})
    # JSON is YAML: promtool reads the file as a rule file.
    rule_file = tmp_path / "dashboard_rules.json"
    rule_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert_succeeded(promtool("check", "rules", str(rule_file)))


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - fired == set(), "alerts no test fires"
    assert alerts - quiet == set(), "alerts no test shows quiet"


def test_every_alert_has_a_for_duration_a_severity_a_summary_and_a_description() -> None:
    for rule in alert_rules():
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


@pytest.mark.parametrize("source", sorted(EXPRESSIONS))
def test_the_monitoring_config_uses_only_exported_metrics_and_their_labels(source: str) -> None:
    expressions = EXPRESSIONS[source]()
    assert any(SELECTOR.search(expr) for expr in expressions), f"{source}: no jobstack metric"
    problems = {expr: promql_problems(expr) for expr in expressions}
    assert {expr: found for expr, found in problems.items() if found} == {}


def test_the_promql_check_catches_unknown_metrics_labels_and_values() -> None:
    assert promql_problems('sum by (queue) (jobstack_jobs{state="queued"})') == []
    assert (
        promql_problems(
            "histogram_quantile(0.9, sum by (le) (rate(jobstack_job_duration_seconds_bucket[5m])))"
        )
        == []
    )
    assert promql_problems("jobstack_job_attempt_total") == [
        "unknown metric jobstack_job_attempt_total"
    ]
    assert promql_problems("jobstack_outbox_pending_count") == [
        "unknown metric jobstack_outbox_pending_count"
    ]
    assert promql_problems('jobstack_jobs{status="queued"}') == [
        "jobstack_jobs has no label status"
    ]
    assert promql_problems('jobstack_jobs{state=~"queued|done"}') == [
        "jobstack_jobs: state is never done"
    ]
    assert promql_problems("sum by (le) (rate(jobstack_job_duration_seconds_sum[5m]))") == [
        "grouping by le, a label of none of ['actor', 'queue']"
    ]


def test_every_exported_metric_has_a_dashboard_panel() -> None:
    shown = {
        base_name(series) for expr in dashboard_queries() for series, _ in SELECTOR.findall(expr)
    }
    assert set(METRICS) - shown == set()


def test_the_dashboard_has_titled_panels_with_queries_and_unique_ids() -> None:
    dashboard = load_dashboard()
    panels = dashboard_panels()
    assert panels
    for panel in panels:
        assert panel.get("title"), panel
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "queue" in variables
    assert dashboard["schemaVersion"] >= 36
