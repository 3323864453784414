#!/usr/bin/env python3
"""Installs, upgrades and uninstalls charts/poolwarden on a cluster with Helm's
own Go SDK (helm-python-sdk, the library .ci/check-packaging installs; run it
with that virtualenv's python), as `helm install/upgrade/uninstall` would:

    helm.py install   KUBECONFIG NAMESPACE RELEASE VALUES_JSON
    helm.py upgrade   KUBECONFIG NAMESPACE RELEASE VALUES_JSON
    helm.py uninstall KUBECONFIG NAMESPACE RELEASE

Prints one JSON line: the release's name, namespace, revision and status (and,
for uninstall, Helm's info text). Helm's error goes to stderr, exit status 1.
"""
import json
import pathlib
import sys

import helm_python as helm

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "poolwarden"


def summary(answer):
    # Install and upgrade answer the release; uninstall {"info": ..., "release": ...}.
    release = answer.get("release") or answer
    return {
        "name": release.get("name"),
        "namespace": release.get("namespace"),
        "revision": release.get("revision"),
        "status": release.get("status"),
        "info": answer.get("info"),
    }


def main():
    action, kubeconfig, namespace, name = sys.argv[1:5]
    values = json.loads(sys.argv[5]) if len(sys.argv) > 5 else None
    with helm.Config(kubeconfig_path=kubeconfig, namespace=namespace) as config:
        try:
            if action == "install":
                with helm.Chart.load(CHART) as chart:
                    chart.validate_schema(chart.merge_values(values))
                    release = config.install(chart, name, values, namespace=namespace, timeout=120)
            elif action == "upgrade":
                with helm.Chart.load(CHART) as chart:
                    chart.validate_schema(chart.merge_values(values))
                    release = config.upgrade(chart, name, values, namespace=namespace, timeout=120)
            elif action == "uninstall":
                release = config.uninstall(name, timeout=120)
            else:
                sys.exit(f"helm.py: unknown action {action!r}")
        except helm.HelmError as e:
            print(f"helm.py {action} {name}: {e}", file=sys.stderr)
            sys.exit(1)
    print(json.dumps(summary(release)))


main()
