"""prow-jobs/ read the way Prow reads it: jobs per kind, each with the presets its labels select."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from tests.deploy.tools import PROW_JOBS

__all__ = ["JOB_CONFIG", "Job", "load_jobs", "load_presets"]

#: What Prow's --job-config-path points at (prow-jobs/test-pods/ is for kubectl, not for Prow).
JOB_CONFIG = PROW_JOBS / "jobs"


@dataclass(frozen=True)
class Job:
    kind: str  # presubmit | postsubmit | periodic
    name: str
    repo: str | None  # "org/repo" for presubmits and postsubmits
    labels: dict[str, str]
    spec: dict[str, Any]
    presets: list[dict[str, Any]]  # the presets whose labels this job carries

    @property
    def service_account(self) -> str:
        account: str = self.spec["serviceAccountName"]
        return account

    def env(self) -> dict[str, str]:
        """The main container's environment after Prow merged the presets in."""
        merged = {e["name"]: e["value"] for p in self.presets for e in p.get("env", [])}
        merged.update({e["name"]: e["value"] for e in self.spec["containers"][0].get("env", [])})
        return merged

    def cache_namespace(self) -> str:
        """What the helper sends: GOCACHEGATE_NAMESPACE, else $REPO_OWNER.$REPO_NAME (not set for periodics)."""
        env = self.env()
        if "GOCACHEGATE_NAMESPACE" in env:
            return env["GOCACHEGATE_NAMESPACE"]
        assert self.repo is not None, f"{self.name}: Prow sets no REPO_OWNER/REPO_NAME for periodics"
        return self.repo.replace("/", ".")


def _documents() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) or {} for p in sorted(JOB_CONFIG.rglob("*.yaml"))]


def load_presets() -> list[dict[str, Any]]:
    return [preset for doc in _documents() for preset in doc.get("presets", [])]


def _selected(labels: dict[str, str], presets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in presets if p["labels"].items() <= labels.items()]


def load_jobs() -> list[Job]:
    presets = load_presets()
    jobs: list[Job] = []
    for doc in _documents():
        for kind in ("presubmit", "postsubmit"):
            for repo, repo_jobs in (doc.get(f"{kind}s") or {}).items():
                for job in repo_jobs:
                    labels = job.get("labels", {})
                    jobs.append(Job(kind, job["name"], repo, labels, job["spec"], _selected(labels, presets)))
        for job in doc.get("periodics") or []:
            labels = job.get("labels", {})
            jobs.append(Job("periodic", job["name"], None, labels, job["spec"], _selected(labels, presets)))
    return jobs
