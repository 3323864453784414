#!/usr/bin/env python3
"""Renders charts/poolwarden as `helm template` would, with the Helm SDK that
.ci/check-packaging installs (run it with that virtualenv's python):

    render-chart.py RELEASE_NAMESPACE VALUES_JSON  > manifests.yaml
"""
import json
import pathlib
import sys

import helm_python as helm

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "poolwarden"

namespace, values = sys.argv[1], json.loads(sys.argv[2])
with helm.Chart.load(CHART) as chart:
    chart.validate_schema(chart.merge_values(values))
    manifests = chart.render(values, name="poolwarden", namespace=namespace, is_install=True)
for path, text in sorted(manifests.items()):
    if path.endswith((".yaml", ".yml")) and text.strip():
        print("---")
        print(text)
