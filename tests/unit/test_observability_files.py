"""deploy/observability: the Grafana dashboard, the alert and recording rules and the scrape example parse,
and every metric they query is one the code really exports, with labels (and fixed label values) it really
has. The exported names are collected from the exporters themselves, never listed here. (No promtool on
the test machines: PromQL is checked by a small tokenizer for metric names and label matchers.)"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from api.metrics import queues_of, render_cluster
from worker.settings import Settings
from worker.stats import ClusterFigures

DIR = Path(__file__).resolve().parents[2] / "deploy" / "observability"
DASHBOARD = DIR / "grafana-dashboard.json"
ALERTS = DIR / "alert-rules.yaml"
RECORDING = DIR / "recording-rules.yaml"
SCRAPE = DIR / "prometheus-scrape.example.yaml"

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}
CHECKED_PREFIXES = ("cropq_", "process_", "python_")
"""Names of these families must be exported by the code; ``cropq:`` names must be recorded by a rule."""


@dataclass
class Exported:
    """Series names the exporters produce, each with the label names seen on it and, where the exporter
    emits the same label values whatever the state (e.g. every job status), those values."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    fixed_values: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def add(self, families: list[Metric], fixed: bool = False) -> None:
        for family in families:
            for suffix in SUFFIXES.get(family.type, ("",)):
                self.labels.setdefault(family.name + suffix, set())
            for s in family.samples:
                self.labels.setdefault(s.name, set()).update(s.labels)
                for label, value in s.labels.items():
                    if fixed:
                        self.fixed_values.setdefault((s.name, label), set()).add(value)


def _parse(text: str) -> list[Metric]:
    return list(text_string_to_metric_families(text))


@pytest.fixture(scope="module")
def exported() -> Exported:
    found = Exported()
    create_app(Settings(s3_endpoint="127.0.0.1:1", log_level="WARNING"))  # every per-process metric defined
    found.add(_parse(generate_latest(REGISTRY).decode()))
    queues = queues_of("cropq")
    some = ClusterFigures(backlog=dict.fromkeys(queues, 0), open_jobs={"cropq": 0}, workers_alive=1)
    found.add(_parse(render_cluster(some).decode()))
    # Empty figures: whatever labels still carry values are values the exporter always emits.
    found.add(_parse(render_cluster(ClusterFigures()).decode()), fixed=True)
    return found


# ---- a small PromQL tokenizer ----
STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^{}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*')")
RANGE = re.compile(r"\[[^\]]*\]")
IDENT = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*")


@dataclass(frozen=True)
class Selector:
    metric: str
    label: str
    op: str
    value: str


def metric_names(expr: str) -> set[str]:
    bare = RANGE.sub("", SELECTOR.sub(lambda m: m.group(1) or "", STRING.sub('""', expr)))
    return set(IDENT.findall(bare))


def matchers(expr: str) -> list[Selector]:
    found = []
    for m in SELECTOR.finditer(expr):
        for label, op, quoted in MATCHER.findall(m.group(2)):
            found.append(
                Selector(m.group(1) or "", label, op, json.loads(quoted) if quoted[0] == '"' else "")
            )
    return found


def test_the_tokenizer_finds_names_and_matchers() -> None:
    expr = (
        'sum by (queue) (rate(cropq_a_total{status="Failed", q!~"x\\\\.y"}[5m])) / on () '
        "cropq:b:rate5m > 0 and histogram_quantile(0.9, cropq_c_bucket)"
    )
    assert {n for n in metric_names(expr) if n.startswith("cropq")} == {
        "cropq_a_total",
        "cropq:b:rate5m",
        "cropq_c_bucket",
    }
    assert matchers(expr) == [
        Selector("cropq_a_total", "status", "=", "Failed"),
        Selector("cropq_a_total", "q", "!~", "x\\.y"),
    ]


# ---- the files ----
def _rules(path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert rules, path
    return rules


def dashboard_exprs() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    found = []
    for panel in doc["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        found += [(f"dashboard panel {panel['title']!r}", t["expr"]) for t in panel["targets"]]
    return found


def rule_exprs() -> list[tuple[str, str]]:
    return [
        (f"{path.name} {rule.get('alert') or rule['record']}", rule["expr"])
        for path in (ALERTS, RECORDING)
        for rule in _rules(path)
    ]


def recorded() -> set[str]:
    return {rule["record"] for rule in _rules(RECORDING)}


def test_every_queried_metric_is_exported_or_recorded(exported: Exported) -> None:
    exprs = dashboard_exprs() + rule_exprs()
    assert len(exprs) > 20
    unknown = []
    for where, expr in exprs:
        names = metric_names(expr)
        assert any(n.startswith((*CHECKED_PREFIXES, "cropq:")) for n in names) or "up" in names, (where, expr)
        for name in names:
            if name.startswith(CHECKED_PREFIXES) and name not in exported.labels:
                unknown.append((where, name))
            if name.startswith("cropq:") and name not in recorded():
                unknown.append((where, name))
    assert not unknown, unknown


def test_every_label_matcher_names_a_real_label_and_value(exported: Exported) -> None:
    wrong = []
    for where, expr in dashboard_exprs() + rule_exprs():
        for sel in matchers(expr):
            if sel.metric.startswith("cropq_"):
                known = exported.labels.get(sel.metric, set())
                # A family the process has not observed yet shows no labels: it cannot be checked here.
                if known and sel.label not in known | {"job", "instance", "pod"}:
                    wrong.append((where, sel))
                values = exported.fixed_values.get((sel.metric, sel.label))
                if values and sel.op in ("=", "!=") and sel.value not in values:
                    wrong.append((where, sel))
                if values and sel.op in ("=~", "!~") and not any(re.fullmatch(sel.value, v) for v in values):
                    wrong.append((where, sel))
    assert not wrong, wrong


def test_the_alerts_cover_backlog_failures_webhooks_and_workers() -> None:
    alerts = {rule["alert"]: rule for rule in _rules(ALERTS)}
    assert {
        "CropqNoWorkersAlive",
        "CropqQueueBacklogHigh",
        "CropqQueueBacklogGrowing",
        "CropqJobFailureRateHigh",
        "CropqWebhookFailuresHigh",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    # Recorded series are computed before they are used: the alerts only read rules that exist.
    used = {n for rule in alerts.values() for n in metric_names(rule["expr"]) if n.startswith("cropq:")}
    assert used <= recorded()


def test_recording_rules_follow_the_naming_convention_and_never_sum_cluster_figures() -> None:
    for rule in _rules(RECORDING):
        assert re.fullmatch(r"cropq:[a-z0-9_]+(:[a-z0-9_]+)?", rule["record"]), rule["record"]
        # A cluster series is the same on every target that exposes it: summing over targets multiplies it.
        for m in re.finditer(
            r"sum\s*(?:by\s*\([^)]*\)\s*)?\(\s*(?:rate\()?\s*(cropq_cluster_\w+)", rule["expr"]
        ):
            pytest.fail(f"{rule['record']} sums {m.group(1)} over targets: take max()")


def test_the_scrape_example_points_at_the_real_metrics_routes() -> None:
    doc = yaml.safe_load(SCRAPE.read_text())
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    paths = create_app(Settings(s3_endpoint="127.0.0.1:1", log_level="WARNING")).openapi()["paths"]
    assert jobs["cropq-api"]["metrics_path"] in paths
    assert jobs["cropq-cluster"]["metrics_path"] in paths
    # The cluster figures are scraped from one target, not from every pod.
    assert "kubernetes_sd_configs" not in jobs["cropq-cluster"]
    assert len(jobs["cropq-cluster"]["static_configs"][0]["targets"]) == 1
    assert set(doc["rule_files"]) == {ALERTS.name, RECORDING.name}
