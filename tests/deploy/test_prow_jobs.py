"""prow-jobs/: Prow's own checkconfig accepts them, and they fit the deployed gate and job namespace."""

from __future__ import annotations

import re
import shutil
import urllib.parse
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import Rendered
from tests.deploy.prowjobs import JOB_CONFIG, Job, load_jobs, load_presets
from tests.deploy.tools import DEPLOY, PROW_CONFIG, find, run, tool

PRESET_LABEL = {"preset-gocachegate": "true"}
#: Which ServiceAccount each kind of job runs as, and the right the gate must give it.
IDENTITY = {"presubmit": ("presubmit-cache", "reader"), "postsubmit": ("postsubmit-cache", "writer"),
            "periodic": ("postsubmit-cache", "writer")}


def checkconfig(job_config: Path) -> tuple[int, str]:
    out = run(
        tool("checkconfig"),
        f"--config-path={PROW_CONFIG}",
        f"--job-config-path={job_config}",
        "--strict",  # every warning is an error
        "--include-default-warnings",
        "--warnings=unknown-fields-all",  # also inside job specs and presets
        "--warnings=valid-decoration-config",
    )
    return out.returncode, out.stdout + out.stderr


def test_checkconfig_accepts_the_jobs_and_presets() -> None:
    code, output = checkconfig(JOB_CONFIG)
    assert code == 0, output
    assert "checkconfig passes without any error" in output


def test_checkconfig_catches_a_misspelt_field(tmp_path: Path) -> None:
    """The check above is only worth something if checkconfig really reads these files strictly."""
    copy = tmp_path / "jobs"
    shutil.copytree(JOB_CONFIG, copy)
    [presets] = [p for p in copy.rglob("*.yaml") if "presets:" in p.read_text()]
    presets.write_text(presets.read_text().replace("mountPath: /gocachegate\n", "mountPth: /gocachegate\n", 1))
    code, output = checkconfig(copy)
    assert code != 0 and "mountPth" in output, output


def test_there_is_a_job_of_each_kind() -> None:
    assert {job.kind for job in load_jobs()} == set(IDENTITY)


@pytest.mark.parametrize("job", load_jobs(), ids=lambda job: job.name)
def test_job_opts_in_with_one_label_and_its_identity(job: Job, test_pods: Rendered,
                                                      prow_config: dict[str, Any]) -> None:
    account, _ = IDENTITY[job.kind]
    assert PRESET_LABEL.items() <= job.labels.items()
    assert len(job.presets) == 1
    assert job.service_account == account
    sa = find(test_pods.docs, "ServiceAccount", account)
    assert sa["metadata"]["namespace"] == prow_config["pod_namespace"]
    assert job.cache_namespace()  # periodics must name it: Prow gives them no REPO_OWNER


@pytest.mark.parametrize("job", load_jobs(), ids=lambda job: job.name)
def test_gate_rules_give_each_job_its_right(job: Job, overlays: dict[str, Rendered],
                                           prow_config: dict[str, Any]) -> None:
    """The first rule matching the job's ServiceAccount grants the expected role on its namespace."""
    _, role = IDENTITY[job.kind]
    subject = f"system:serviceaccount:{prow_config['pod_namespace']}:{job.service_account}"
    for rendered in overlays.values():
        rules = rendered.gate_config()["auth"]["rules"]
        matching = [r for r in rules if "subject" in r and fnmatchcase(subject, r["subject"])]
        assert matching, f"{rendered.name}: no rule for {subject}"
        first = matching[0]
        assert first["role"] == role, f"{rendered.name}: {subject} gets {first['role']}"
        assert any(fnmatchcase(job.cache_namespace(), ns) for ns in first["namespaces"])


def test_preset_points_at_the_deployed_gate(overlays: dict[str, Rendered]) -> None:
    [preset] = [p for p in load_presets() if p["labels"] == PRESET_LABEL]
    env = {e["name"]: e["value"] for e in preset["env"]}
    mounts = {m["name"]: m["mountPath"] for m in preset["volumeMounts"]}
    volumes = {v["name"]: v for v in preset["volumes"]}

    url = urllib.parse.urlsplit(env["GOCACHEGATE_URL"])
    service_name, namespace, *_ = (url.hostname or "").split(".")
    for rendered in overlays.values():
        service = find(rendered.docs, "Service", service_name)
        assert service["metadata"]["namespace"] == namespace
        assert (url.port or 80) in [p["port"] for p in service["spec"]["ports"]]

        # The token is for the gate alone: its audience is one the gate accepts, and no other service's.
        [source] = volumes[_mount_of(mounts, env["GOCACHEGATE_TOKEN_FILE"])]["projected"]["sources"]
        token = source["serviceAccountToken"]
        assert Path(env["GOCACHEGATE_TOKEN_FILE"]).name == token["path"]
        issuers = rendered.gate_config()["auth"]["issuers"]
        assert any(token["audience"] in issuer["audiences"] for issuer in issuers)
        assert token["audience"] == "gocachegate"

    # Helper and L1 live in the emptyDir the admission policy's init container fills.
    work = _mount_of(mounts, env["GOCACHEPROG"])
    assert "emptyDir" in volumes[work] and _mount_of(mounts, env["GOCACHEGATE_DIR"]) == work


def _mount_of(mounts: dict[str, str], path: str) -> str:
    [name] = [n for n, m in mounts.items() if Path(path).is_relative_to(m)]
    return name


def test_admission_policy_puts_the_helper_where_the_preset_looks(test_pods: Rendered,
                                                                 prow_config: dict[str, Any]) -> None:
    [preset] = [p for p in load_presets() if p["labels"] == PRESET_LABEL]
    env = {e["name"]: e["value"] for e in preset["env"]}
    mounts = {m["name"]: m["mountPath"] for m in preset["volumeMounts"]}

    policy = find(test_pods.docs, "MutatingAdmissionPolicy", "gocachegate-helper")["spec"]
    binding = find(test_pods.docs, "MutatingAdmissionPolicyBinding", "gocachegate-helper")["spec"]
    assert binding["policyName"] == "gocachegate-helper"
    assert binding["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": prow_config["pod_namespace"]
    }
    assert policy["matchConstraints"]["objectSelector"]["matchLabels"] == PRESET_LABEL
    assert policy["failurePolicy"] == "Fail"

    expression = policy["mutations"][0]["applyConfiguration"]["expression"]
    mount = re.search(r'volumeMounts\{\s*name: "([^"]+)",\s*mountPath: "([^"]+)"', expression)
    image = re.search(r'image: "([^"]+)"', expression)
    assert mount and image, expression
    assert mounts.get(mount[1]) == mount[2]
    assert image[1].split("/")[-1].split(":")[0] == "gocacheprog-bundle"

    # The bundle image's entrypoint copies into <mount>/helper/, the directory GOCACHEPROG names.
    dockerfile = (DEPLOY / "bundle" / "Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT .*cp -R /opt/gocacheprog/\. (\S+?)/?\"\]$", dockerfile, re.M)
    assert entrypoint, "deploy/bundle/Dockerfile: no copying ENTRYPOINT"
    assert Path(entrypoint[1]) / "gocacheprog" == Path(env["GOCACHEPROG"])
    assert Path(entrypoint[1]).is_relative_to(mount[2])
