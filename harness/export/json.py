"""JSON report: the summary plus the manifest fields needed to read it alone."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from harness.export import ReportData


def describe_run(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Select what a reader of the summary needs from the manifest."""
    scenario = manifest.get("scenario") or {}
    return {
        "tool": manifest.get("tool"),
        "command": manifest.get("command"),
        "status": manifest.get("status"),
        "started_at": manifest.get("started_at"),
        "finished_at": manifest.get("finished_at"),
        "scenario": {
            "name": scenario.get("name"),
            "phases": [
                {"name": phase["name"], "budget": phase["budget"]}
                for phase in scenario.get("phases", [])
            ],
            "budgets": scenario.get("budgets"),
            "packages": scenario.get("packages"),
            "env": scenario.get("env"),
        },
        "builds": [
            {
                "label": build.get("label"),
                "spec": (build.get("spec") or {}).get("raw"),
                "distribution": build.get("distribution"),
                "version": build.get("version"),
                "commit": build.get("commit"),
                "image_id": build.get("image_id"),
            }
            for build in manifest.get("builds", [])
        ],
        "failed_builds": manifest.get("failed_builds", []),
        "base_image": manifest.get("base_image"),
        "limits": manifest.get("limits"),
        "plan": manifest.get("plan"),
        "host": manifest.get("host"),
    }


class JsonExporter:
    """``Summary.to_dict()`` with a "run" object taken from the manifest."""

    name = "json"

    def render(self, report: ReportData) -> str:
        data = report.summary.to_dict()
        data["run"] = describe_run(report.manifest)
        # allow_nan=False: to_dict() has already mapped NaN to None.
        return json.dumps(data, indent=2, allow_nan=False) + "\n"


EXPORTER = JsonExporter()
