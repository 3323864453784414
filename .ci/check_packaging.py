#!/usr/bin/env python3
"""Checks the Helm chart and the kustomize base without a cluster.

Run through .ci/check-packaging, which provides the virtualenv with the pinned
helm-python-sdk (Helm's Go SDK, as a library) and kubernetes-validate (the API's
JSON schemas). What it checks, and prints as it goes:

- the chart lints cleanly (Helm's own lint, strict) at the oldest Kubernetes the
  chart declares (Chart.yaml kubeVersion) and at the newest kubernetes-validate knows;
- for several sets of values (default, namespaced mode, ServiceMonitor, one replica),
  the values pass values.schema.json, the chart renders, and every object is valid
  against the Kubernetes schemas in strict mode (unknown fields are errors) at both
  versions; the ServiceMonitor, a prometheus-operator kind with no schema there, is
  checked structurally instead;
- values that cannot work are refused (unknown keys, several replicas without leader
  election, a database Secret outside the watched namespace);
- `kubectl kustomize config/default` renders and validates the same way, and so does
  config/samples/secret-reader-role.yaml;
- the CRD (crds/, the chart's copy, the kustomize copy) is one file, valid at both
  versions;
- RBAC: no ClusterRole grants Secrets, any Secret grant is `get` on named Secrets,
  no wildcards, namespaced mode has no ClusterRole or ClusterRoleBinding at all, every
  binding points at a role and a ServiceAccount of the same render, and the
  permissions granted are exactly the table in docs/controller.md "Permissions (RBAC)";
- the Deployment runs as the restricted Pod Security Standard asks, with the
  controller's arguments, the downward-API env, probes on /healthz and /readyz, and
  resources; the PodDisruptionBudget and the metrics Service select its pods.

Exit status 0 when everything holds, 1 otherwise (every problem is printed).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import helm_python as helm
import kubernetes_validate
import kubernetes_validate.utils
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "poolwarden"
CRD = ROOT / "crds" / "poolpolicies.poolwarden.io.yaml"
CRD_COPIES = [CHART / "crds" / CRD.name, ROOT / "config" / "crd" / CRD.name]
KUSTOMIZE_BASE = ROOT / "config" / "default"
SECRET_ROLE_SAMPLE = ROOT / "config" / "samples" / "secret-reader-role.yaml"
RBAC_DOC = ROOT / "docs" / "controller.md"

RELEASE = "poolwarden"
RELEASE_NAMESPACE = "poolwarden"
METRICS_PORT = 8080

# Kinds that are not Kubernetes' own: kubernetes-validate has no schema for them.
NOT_KUBERNETES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (
        "a prometheus-operator CRD kind, for which kubernetes-validate has no schema; "
        "checked structurally against the metrics Service instead"
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): (
        "a prometheus-operator CRD kind, for which kubernetes-validate has no schema; "
        "checked against the plain rules file instead (promtool checks that one)"
    ),
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}

# Values the chart must render, and what each one means for the checks.
SCENARIOS: list[dict[str, Any]] = [
    {
        "name": "default values",
        "values": {},
        "watch_namespace": None,
        "replicas": 2,
        "leader_election": True,
        "secret_namespaces": {},
    },
    {
        "name": "namespaced mode (watchNamespace: shop) with its database Secret",
        "values": {
            "watchNamespace": "shop",
            "databaseSecrets": [{"namespace": "shop", "names": ["pg-monitor"]}],
        },
        "watch_namespace": "shop",
        "replicas": 2,
        "leader_election": True,
        "secret_namespaces": {"shop": {"pg-monitor"}},
    },
    {
        "name": "cluster-wide, database Secrets in two namespaces, ServiceMonitor on",
        "values": {
            "databaseSecrets": [
                {"namespace": "shop", "names": ["pg-monitor"]},
                {"namespace": "billing", "names": ["pg-monitor"]},
                {"namespace": "billing", "names": ["pg-monitor", "pg-replica"]},
            ],
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
            "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "poolwarden"}},
        },
        "watch_namespace": None,
        "replicas": 2,
        "leader_election": True,
        "secret_namespaces": {"shop": {"pg-monitor"}, "billing": {"pg-monitor", "pg-replica"}},
    },
    {
        "name": "one replica without leader election",
        "values": {"replicaCount": 1, "leaderElection": {"enabled": False}},
        "watch_namespace": None,
        "replicas": 1,
        "leader_election": False,
        "secret_namespaces": {},
    },
]

# Values the chart must refuse, at the schema or at render time.
REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("an unknown key (replicas)", {"replicas": 3}),
    ("an unknown nested key (image.digest)", {"image": {"digest": "sha256:0"}}),
    ("an unknown nested key (prometheusRule.groups)", {"prometheusRule": {"enabled": True, "groups": []}}),
    ("a Grafana sidecar label that is no label name", {"grafanaDashboard": {"enabled": True, "label": "a b"}}),
    ("a database Secret without names", {"databaseSecrets": [{"namespace": "shop"}]}),
    ("two replicas without leader election", {"leaderElection": {"enabled": False}}),
    (
        "a database Secret outside watchNamespace",
        {
            "watchNamespace": "shop",
            "databaseSecrets": [{"namespace": "billing", "names": ["pg-monitor"]}],
        },
    ),
]


class Report:
    """Counts checks and prints each one; problems never stop the run."""

    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"  ok    {what}")

    def fail(self, what: str, why: str) -> None:
        self.failures.append(f"{what}: {why}")
        print(f"  FAIL  {what}: {why}")

    def check(self, condition: bool, what: str, why: str) -> bool:
        if condition:
            self.ok(what)
        else:
            self.fail(what, why)
        return condition

    def section(self, title: str) -> None:
        print(f"\n{title}")


def dig(obj: Any, *path: Any, default: Any = None) -> Any:
    for key in path:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and 0 <= key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


def describe(obj: dict[str, Any]) -> str:
    namespace = dig(obj, "metadata", "namespace")
    name = dig(obj, "metadata", "name", default="?")
    return f"{obj.get('kind', '?')} {namespace + '/' if namespace else ''}{name}"


def load_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kubernetes_versions() -> tuple[str, str]:
    """The oldest Kubernetes the chart declares, and the newest kubernetes-validate knows."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    match = re.match(r"^>=\s*v?(\d+\.\d+)", str(chart.get("kubeVersion", "")))
    if not match:
        sys.exit(f"Chart.yaml kubeVersion {chart.get('kubeVersion')!r} is not '>=X.Y...'")
    oldest = f"{match.group(1)}.0"
    known = kubernetes_validate.utils.all_versions()
    if oldest not in known:
        sys.exit(f"kubernetes-validate has no schemas for Kubernetes {oldest} (it has {known})")
    return oldest, kubernetes_validate.latest_version()


# ---------------------------------------------------------------- schema validation


def validate_objects(
    report: Report, label: str, objects: list[dict[str, Any]], versions: Iterable[str]
) -> None:
    for obj in objects:
        kind = (obj.get("apiVersion"), obj.get("kind"))
        if kind in NOT_KUBERNETES:
            print(f"  skip  {label}: {describe(obj)} strict schema: {NOT_KUBERNETES[kind]}")
            continue
        what = f"{label}: {describe(obj)} is valid for Kubernetes {' and '.join(versions)} (strict)"
        errors = []
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{version}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{version}: {e.message}")
        if obj.get("kind") not in CLUSTER_SCOPED and not dig(obj, "metadata", "namespace"):
            errors.append("metadata.namespace is missing (the object would land wherever kubectl points)")
        report.check(not errors, what, "; ".join(errors))


def check_unique(report: Report, label: str, objects: list[dict[str, Any]]) -> None:
    seen: dict[tuple[Any, ...], int] = {}
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"), dig(obj, "metadata", "namespace"),
               dig(obj, "metadata", "name"))
        seen[key] = seen.get(key, 0) + 1
    duplicates = [k for k, n in seen.items() if n > 1]
    report.check(not duplicates, f"{label}: every object is rendered once", f"duplicates {duplicates}")


# ---------------------------------------------------------------- RBAC


def documented_permissions() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) from docs/controller.md's "Permissions (RBAC)" table."""
    text = RBAC_DOC.read_text()
    section = text.split("## Permissions (RBAC)", 1)[1].split("\n## ", 1)[0]
    permissions = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        tokens = re.findall(r"`([^`]*)`", cells[0])
        group = "" if tokens[0] == '""' else tokens[0]
        for resource in tokens[1:]:
            for verb in (v.strip() for v in cells[1].split(",")):
                permissions.add((group, resource, verb))
    if not permissions:
        sys.exit(f"{RBAC_DOC}: no permissions table found under '## Permissions (RBAC)'")
    return permissions


def rule_grants(rule: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def touches_secrets(rule: dict[str, Any]) -> bool:
    groups = set(rule.get("apiGroups", []))
    resources = set(rule.get("resources", []))
    return bool(groups & {"", "*"}) and bool(resources & {"secrets", "*"})


def check_rbac(
    report: Report,
    label: str,
    objects: list[dict[str, Any]],
    *,
    watch_namespace: str | None,
    leader_election: bool,
    secret_namespaces: dict[str, set[str]],
    documented: set[tuple[str, str, str]],
) -> None:
    roles = {
        (o["kind"], dig(o, "metadata", "namespace"), dig(o, "metadata", "name")): o
        for o in objects
        if o.get("kind") in ("Role", "ClusterRole")
    }
    bindings = [o for o in objects if o.get("kind") in ("RoleBinding", "ClusterRoleBinding")]
    accounts = {
        (dig(o, "metadata", "namespace"), dig(o, "metadata", "name"))
        for o in objects
        if o.get("kind") == "ServiceAccount"
    }

    for (kind, namespace, name), role in roles.items():
        rules = role.get("rules") or []
        where = f"{label}: {describe(role)}"
        wildcards = [r for r in rules if "*" in {*r.get("apiGroups", []), *r.get("resources", []),
                                                  *r.get("verbs", [])}]
        report.check(not wildcards, f"{where} grants no wildcard", f"rules {wildcards}")
        secret_rules = [r for r in rules if touches_secrets(r)]
        if kind == "ClusterRole":
            report.check(not secret_rules, f"{where} grants nothing on Secrets",
                         f"cluster-wide Secret rules {secret_rules}")
        for rule in secret_rules:
            report.check(
                rule.get("verbs") == ["get"] and bool(rule.get("resourceNames")),
                f"{where} grants Secrets only as `get` on named Secrets",
                f"rule {rule}",
            )

    granted: set[tuple[str, str, str]] = set()
    secrets_by_namespace: dict[str, set[str]] = {}
    for binding in bindings:
        where = f"{label}: {describe(binding)}"
        ref = binding.get("roleRef") or {}
        ref_namespace = None if ref.get("kind") == "ClusterRole" else dig(binding, "metadata", "namespace")
        role = roles.get((ref.get("kind"), ref_namespace, ref.get("name")))
        report.check(role is not None, f"{where} refers to a role of the render",
                     f"no {ref.get('kind')} {ref.get('name')}")
        for subject in binding.get("subjects") or []:
            report.check(
                subject.get("kind") == "ServiceAccount"
                and (subject.get("namespace"), subject.get("name")) in accounts,
                f"{where} binds the controller's ServiceAccount",
                f"subject {subject} is not a ServiceAccount of the render",
            )
        if role is None:
            continue
        for rule in role.get("rules") or []:
            grants = rule_grants(rule)
            granted |= grants
            if touches_secrets(rule):
                secrets_by_namespace.setdefault(ref_namespace or "*", set()).update(
                    rule.get("resourceNames") or [])
        if watch_namespace is not None and any(
            g[1] in ("poolpolicies", "deployments", "pods") for r in role.get("rules") or []
            for g in rule_grants(r)
        ):
            report.check(
                role["kind"] == "Role" and ref_namespace == watch_namespace,
                f"{where}: the workload permissions are a Role in {watch_namespace} only",
                f"they are a {role['kind']} in {ref_namespace or 'the whole cluster'}",
            )

    if watch_namespace is not None:
        cluster_wide = [
            describe(o) for o in objects if o.get("kind") in ("ClusterRole", "ClusterRoleBinding")
        ]
        report.check(not cluster_wide, f"{label}: namespaced mode has no ClusterRole or ClusterRoleBinding",
                     f"found {cluster_wide}")

    def show(grants: dict[str, set[str]]) -> str:
        shown = [f"{ns}: {' '.join(sorted(names)) or 'every Secret'}" for ns, names in sorted(grants.items())]
        return ", ".join(shown) or "none"

    report.check(
        secrets_by_namespace == secret_namespaces,
        f"{label}: Secrets readable exactly as expected ({show(secret_namespaces)})",
        f"granted {show(secrets_by_namespace)}",
    )

    expected = {p for p in documented if p[1] != "secrets" or secret_namespaces}
    if not leader_election:
        expected = {p for p in expected if p[1] != "leases"}
    missing, extra = expected - granted, granted - expected
    report.check(
        not missing and not extra,
        f"{label}: permissions are exactly docs/controller.md's table",
        f"missing {sorted(missing)}, not documented {sorted(extra)}",
    )


# ---------------------------------------------------------------- workloads


def check_deployment(
    report: Report,
    label: str,
    objects: list[dict[str, Any]],
    *,
    watch_namespace: str | None,
    replicas: int,
    leader_election: bool,
) -> None:
    deployments = [o for o in objects if o.get("kind") == "Deployment"]
    if not report.check(len(deployments) == 1, f"{label}: one Deployment", f"found {len(deployments)}"):
        return
    deployment = deployments[0]
    where = f"{label}: {describe(deployment)}"
    pod = dig(deployment, "spec", "template", "spec", default={})
    pod_labels = dig(deployment, "spec", "template", "metadata", "labels", default={})
    selector = dig(deployment, "spec", "selector", "matchLabels", default={})

    report.check(dig(deployment, "spec", "replicas") == replicas, f"{where} has {replicas} replica(s)",
                 f"replicas {dig(deployment, 'spec', 'replicas')}")
    report.check(selector.items() <= pod_labels.items(), f"{where} selects its own pods",
                 f"selector {selector} vs labels {pod_labels}")
    accounts = {dig(o, "metadata", "name") for o in objects if o.get("kind") == "ServiceAccount"}
    report.check(pod.get("serviceAccountName") in accounts, f"{where} runs as the rendered ServiceAccount",
                 f"serviceAccountName {pod.get('serviceAccountName')!r}, accounts {accounts}")

    pod_security = pod.get("securityContext") or {}
    report.check(
        pod_security.get("runAsNonRoot") is True
        and dig(pod_security, "seccompProfile", "type") == "RuntimeDefault",
        f"{where}: pod runs as non-root with the RuntimeDefault seccomp profile",
        f"securityContext {pod_security}",
    )
    containers = pod.get("containers") or []
    for container in containers + (pod.get("initContainers") or []):
        security = container.get("securityContext") or {}
        name = container.get("name")
        report.check(
            security.get("allowPrivilegeEscalation") is False
            and security.get("readOnlyRootFilesystem") is True
            and "ALL" in (dig(security, "capabilities", "drop", default=[]) or [])
            and not dig(security, "capabilities", "add")
            and security.get("privileged") is not True
            and (security.get("runAsNonRoot", True) is True),
            f"{where}: container {name} is restricted (no privilege escalation, read-only root, "
            "all capabilities dropped)",
            f"securityContext {security}",
        )
    if not report.check(len(containers) == 1, f"{where} has one container", f"found {len(containers)}"):
        return
    container = containers[0]
    args = container.get("args") or []
    expected_args = [["--log-format", "json"], ["--metrics-addr", f"0.0.0.0:{METRICS_PORT}"]]
    if watch_namespace:
        expected_args.append(["--namespace", watch_namespace])
    present = all(any(args[i:i + len(pair)] == pair for i in range(len(args))) for pair in expected_args)
    report.check(
        args[:1] == ["controller"] and present
        and ("--leader-election" in args) == leader_election
        and ("--namespace" in args) == bool(watch_namespace),
        f"{where}: args are controller{' --leader-election' if leader_election else ''} "
        f"--log-format json --metrics-addr 0.0.0.0:{METRICS_PORT}"
        f"{' --namespace ' + watch_namespace if watch_namespace else ''}",
        f"args {args}",
    )
    env = {e.get("name"): dig(e, "valueFrom", "fieldRef", "fieldPath") for e in container.get("env") or []}
    report.check(
        env.get("POD_NAME") == "metadata.name" and env.get("POD_NAMESPACE") == "metadata.namespace",
        f"{where}: POD_NAME and POD_NAMESPACE come from the downward API",
        f"env {env}",
    )
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        port = dig(container, probe, "httpGet", "port")
        report.check(
            dig(container, probe, "httpGet", "path") == path and ports.get(port, port) == METRICS_PORT,
            f"{where}: {probe} is GET {path} on port {METRICS_PORT}",
            f"{probe} {container.get(probe)}",
        )
    resources = container.get("resources") or {}
    report.check(
        bool(resources.get("requests")) and bool(dig(resources, "limits", "memory")),
        f"{where}: resource requests and a memory limit are set",
        f"resources {resources}",
    )

    budgets = [o for o in objects if o.get("kind") == "PodDisruptionBudget"]
    if replicas > 1:
        report.check(
            len(budgets) == 1
            and dig(budgets[0], "spec", "minAvailable") == 1
            and dig(budgets[0], "spec", "selector", "matchLabels", default={}).items() <= pod_labels.items(),
            f"{label}: a PodDisruptionBudget keeps 1 of the {replicas} pods",
            f"budgets {[(describe(b), b.get('spec')) for b in budgets]}",
        )
    else:
        report.check(not budgets, f"{label}: no PodDisruptionBudget for a single replica",
                     f"found {[describe(b) for b in budgets]}")

    services = [o for o in objects if o.get("kind") == "Service"]
    report.check(
        len(services) == 1
        and dig(services[0], "spec", "selector", default={}).items() <= pod_labels.items()
        and any(ports.get(p.get("targetPort"), p.get("targetPort")) == METRICS_PORT
                for p in dig(services[0], "spec", "ports", default=[])),
        f"{label}: the metrics Service selects the controller's pods and targets port {METRICS_PORT}",
        f"services {[(describe(s), s.get('spec')) for s in services]}",
    )


def check_service_monitors(report: Report, label: str, objects: list[dict[str, Any]]) -> None:
    services = [o for o in objects if o.get("kind") == "Service"]
    for monitor in (o for o in objects if o.get("kind") == "ServiceMonitor"):
        where = f"{label}: {describe(monitor)}"
        spec = monitor.get("spec") or {}
        match_labels = dig(spec, "selector", "matchLabels", default={})
        endpoints = spec.get("endpoints") or []
        targets = [
            s for s in services
            if match_labels and match_labels.items() <= dig(s, "metadata", "labels", default={}).items()
        ]
        port_names = {p.get("name") for s in targets for p in dig(s, "spec", "ports", default=[])}
        report.check(
            set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
            and len(targets) == 1
            and bool(endpoints)
            and all(set(e) <= {"port", "path", "interval", "scrapeTimeout"} for e in endpoints)
            and all(e.get("port") in port_names and e.get("path") == "/metrics" for e in endpoints)
            and dig(monitor, "metadata", "namespace")
            in dig(spec, "namespaceSelector", "matchNames", default=[]),
            f"{where} scrapes /metrics on the metrics Service's named port (structural check)",
            f"spec {spec}, matching services {[describe(s) for s in targets]}",
        )


def check_monitoring(report: Report, label: str, values: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    """The PrometheusRule carries the plain rules file's groups and the dashboard
    ConfigMap the dashboard JSON, unchanged, each only when enabled."""
    rules = [o for o in objects if o.get("kind") == "PrometheusRule"]
    enabled = bool(dig(values, "prometheusRule", "enabled"))
    plain = yaml.safe_load((CHART / "monitoring" / "poolwarden.rules.yaml").read_text())
    report.check(
        len(rules) == int(enabled) and all(dig(r, "spec", "groups") == plain["groups"] for r in rules),
        f"{label}: " + ("one PrometheusRule with the groups of monitoring/poolwarden.rules.yaml" if enabled
                         else "no PrometheusRule"),
        f"found {len(rules)}",
    )
    dashboards = [
        o for o in objects
        if o.get("kind") == "ConfigMap" and "grafana_dashboard" in dig(o, "metadata", "labels", default={})
    ]
    enabled = bool(dig(values, "grafanaDashboard", "enabled"))
    json_text = (CHART / "dashboards" / "poolwarden.json").read_text()
    report.check(
        len(dashboards) == int(enabled)
        and all(json.loads(dig(d, "data", "poolwarden.json")) == json.loads(json_text) for d in dashboards),
        f"{label}: " + ("one ConfigMap with the grafana_dashboard label holding dashboards/poolwarden.json" if enabled
                         else "no dashboard ConfigMap"),
        f"found {len(dashboards)}",
    )


# ---------------------------------------------------------------- the chart


def check_chart(report: Report, versions: tuple[str, ...], documented: set[tuple[str, str, str]]) -> None:
    report.section(f"Helm chart {CHART.relative_to(ROOT)} (Helm SDK {helm.helm_sdk_version()}, "
                   f"helm-python-sdk {helm.__version__})")
    with helm.Chart.load(CHART) as chart:
        crds = [(c.get("name"), c.get("data")) for c in chart.crds]
        report.check(crds == [(f"crds/{CRD.name}", CRD.read_text())],
                     f"Helm loads crds/{CRD.name} as the chart's only CRD, unchanged",
                     f"chart CRDs {[name for name, _ in crds]}")

        for scenario in SCENARIOS:
            label = f"chart [{scenario['name']}]"
            values = scenario["values"]
            for version in versions:
                lint = helm.lint(CHART, values, strict=True, namespace=RELEASE_NAMESPACE,
                                 kube_version=f"v{version}")
                problems = [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2]
                notes = [m["error"] for m in lint.get("messages", []) if m.get("severity", 0) < 2]
                report.check(
                    not problems and not lint.get("errors"),
                    f"{label}: helm lint --strict for Kubernetes {version}"
                    + (f" (info: {'; '.join(notes)})" if notes else ""),
                    f"{problems or lint.get('errors')}",
                )
            try:
                chart.validate_schema(chart.merge_values(values))
                manifests = chart.render(values, name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True)
            except helm.HelmError as e:
                report.fail(f"{label}: values pass values.schema.json and render", str(e))
                continue
            report.ok(f"{label}: values pass values.schema.json and render")
            objects: list[dict[str, Any]] = []
            for path, text in sorted(manifests.items()):
                if path.endswith("NOTES.txt"):
                    report.check(bool(text.strip()), f"{label}: NOTES.txt renders", "it is empty")
                    continue
                try:
                    objects.extend(load_documents(text))
                except yaml.YAMLError as e:
                    report.fail(f"{label}: {path} is YAML", str(e))
            print(f"  ..    {label}: {len(objects)} objects: {', '.join(describe(o) for o in objects)}")
            check_unique(report, label, objects)
            validate_objects(report, label, objects, versions)
            check_rbac(
                report, label, objects,
                watch_namespace=scenario["watch_namespace"],
                leader_election=scenario["leader_election"],
                secret_namespaces=scenario["secret_namespaces"],
                documented=documented,
            )
            check_deployment(
                report, label, objects,
                watch_namespace=scenario["watch_namespace"],
                replicas=scenario["replicas"],
                leader_election=scenario["leader_election"],
            )
            monitors = [o for o in objects if o.get("kind") == "ServiceMonitor"]
            enabled = bool(dig(values, "serviceMonitor", "enabled"))
            report.check(len(monitors) == int(enabled),
                         f"{label}: {'one' if enabled else 'no'} ServiceMonitor",
                         f"found {len(monitors)}")
            check_service_monitors(report, label, objects)
            check_monitoring(report, label, values, objects)

        for name, values in REFUSED:
            what = f"chart: refuses {name}"
            try:
                chart.validate_schema(chart.merge_values(values))
                chart.render(values, name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True)
            except helm.HelmError as e:
                report.ok(f"{what} ({type(e).__name__}: {' '.join(str(e).split())[:120]})")
            else:
                report.fail(what, "the values were accepted")


# ---------------------------------------------------------------- kustomize and the CRD


def check_kustomize(report: Report, versions: tuple[str, ...], documented: set[tuple[str, str, str]]) -> None:
    base = KUSTOMIZE_BASE.relative_to(ROOT)
    report.section(f"kustomize base {base}")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        report.fail(f"kubectl kustomize {base}", "kubectl is not on PATH")
        return
    result = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE_BASE)], capture_output=True, text=True)
    if not report.check(result.returncode == 0, f"kubectl kustomize {base} renders", result.stderr.strip()):
        return
    label = f"kustomize {base}"
    objects = load_documents(result.stdout)
    print(f"  ..    {label}: {len(objects)} objects: {', '.join(describe(o) for o in objects)}")
    check_unique(report, label, objects)
    validate_objects(report, label, objects, versions)
    check_rbac(report, label, objects, watch_namespace=None, leader_election=True,
               secret_namespaces={}, documented=documented)
    check_deployment(report, label, objects, watch_namespace=None, replicas=2, leader_election=True)
    crds = [o for o in objects if o.get("kind") == "CustomResourceDefinition"]
    report.check(crds == load_documents(CRD.read_text()), f"{label}: carries the PoolPolicy CRD unchanged",
                 f"CRDs {[describe(c) for c in crds]}")

    sample = SECRET_ROLE_SAMPLE.relative_to(ROOT)
    sample_objects = load_documents(SECRET_ROLE_SAMPLE.read_text())
    validate_objects(report, str(sample), sample_objects, versions)
    accounts = [o for o in objects if o.get("kind") == "ServiceAccount"]
    check_rbac(report, f"{sample} with {label}", sample_objects + accounts, watch_namespace=None,
               leader_election=False, secret_namespaces={"shop": {"pg-monitor"}},
               documented={p for p in documented if p[1] == "secrets"})


def check_crd(report: Report, versions: tuple[str, ...]) -> None:
    report.section("CRD")
    text = CRD.read_bytes()
    for copy in CRD_COPIES:
        report.check(copy.read_bytes() == text, f"{copy.relative_to(ROOT)} is byte-identical to "
                     f"{CRD.relative_to(ROOT)}", "it differs: run `make generate`")
    validate_objects(report, str(CRD.relative_to(ROOT)), load_documents(text.decode()), versions)


def main() -> int:
    oldest, newest = kubernetes_versions()
    versions = (oldest, newest)
    print(f"check-packaging: Kubernetes {oldest} (Chart.yaml kubeVersion) and {newest} "
          f"(newest kubernetes-validate {kubernetes_validate.__version__} knows)")
    documented = documented_permissions()
    report = Report()
    check_crd(report, versions)
    check_chart(report, versions, documented)
    check_kustomize(report, versions, documented)
    print()
    if report.failures:
        print(f"check-packaging: {len(report.failures)} problem(s), {report.passed} check(s) held:")
        for failure in report.failures:
            print(f"  - {failure}")
        return 1
    print(f"check-packaging: all {report.passed} checks held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
