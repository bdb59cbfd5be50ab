"""prow-jobs/: Prow's own checkconfig accepts them, and they fit the deployed gate and job namespace."""

from __future__ import annotations

import copy
import json
import re
import shutil
import urllib.parse
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import Rendered
from tests.deploy.prowjobs import JOB_CONFIG, Job, load_jobs, load_presets
from tests.deploy.tools import DEPLOY, PROW_CONFIG, find, kubernetes_validate, run, tool

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


def test_admission_policy_is_bound_to_labelled_job_pods(test_pods: Rendered, prow_config: dict[str, Any]) -> None:
    policy = find(test_pods.docs, "MutatingAdmissionPolicy", "gocachegate-helper")["spec"]
    binding = find(test_pods.docs, "MutatingAdmissionPolicyBinding", "gocachegate-helper")["spec"]
    assert binding["policyName"] == "gocachegate-helper"
    assert binding["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": prow_config["pod_namespace"]
    }
    assert policy["matchConstraints"]["objectSelector"]["matchLabels"] == PRESET_LABEL
    assert policy["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE"]
    assert policy["failurePolicy"] == "Fail"


def job_pod(job: Job, namespace: str, *, prow_init: bool) -> dict[str, Any]:
    """The pod Prow creates for ``job``: its spec with the presets merged in, its labels, and (for a
    decorated job) Prow's own init containers in front; their details do not matter here."""
    spec = copy.deepcopy(job.spec)
    for preset in job.presets:
        spec.setdefault("volumes", []).extend(preset.get("volumes", []))
        for container in spec["containers"]:
            container.setdefault("env", []).extend(preset.get("env", []))
            container.setdefault("volumeMounts", []).extend(preset.get("volumeMounts", []))
    if prow_init:
        spec["initContainers"] = [{"name": "clonerefs", "image": "clonerefs:v1"},
                                  {"name": "place-entrypoint", "image": "entrypoint:v1"}]
    labels = {**job.labels, "created-by-prow": "true", "prow.k8s.io/type": job.kind}
    return {"apiVersion": "v1", "kind": "Pod", "spec": spec,
            "metadata": {"name": job.name, "namespace": namespace, "labels": labels}}


def admit(test_pods: Rendered, pod: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The pod after the API server ran the admission policies on its creation (tests/deploy/mapcheck)."""
    path = tmp_path / f"pod-{len(list(tmp_path.glob('pod-*')))}.yaml"
    path.write_text(yaml.safe_dump(pod))
    out = run(tool("mapcheck"), test_pods.path, path)
    assert out.returncode == 0, out.stderr
    admitted: dict[str, Any] = json.loads(out.stdout)
    return admitted


@pytest.mark.parametrize("prow_init", [True, False], ids=["decorated", "undecorated"])
@pytest.mark.parametrize("job", load_jobs(), ids=lambda job: job.name)
def test_admission_policy_brings_the_helper_where_the_preset_looks(
    job: Job, prow_init: bool, test_pods: Rendered, prow_config: dict[str, Any], tmp_path: Path
) -> None:
    pod = job_pod(job, prow_config["pod_namespace"], prow_init=prow_init)
    admitted = admit(test_pods, pod, tmp_path)
    containers = admitted["spec"]["initContainers"]
    names = [c["name"] for c in containers]
    assert names == [c["name"] for c in pod["spec"].get("initContainers", [])] + ["gocacheprog-bundle"]
    [helper] = [c for c in containers if c["name"] == "gocacheprog-bundle"]
    assert helper["image"].rsplit("/", 1)[-1].split(":")[0] == "gocacheprog-bundle"
    assert helper["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert helper["securityContext"]["allowPrivilegeEscalation"] is False

    # It writes into the preset's emptyDir, where the bundle image's entrypoint puts GOCACHEPROG.
    env = job.env()
    volumes = {v["name"]: v for v in admitted["spec"]["volumes"]}
    [mount] = helper["volumeMounts"]
    assert "emptyDir" in volumes[mount["name"]]
    main_mounts = {m["name"]: m["mountPath"] for m in admitted["spec"]["containers"][0]["volumeMounts"]}
    assert main_mounts[mount["name"]] == mount["mountPath"]
    dockerfile = (DEPLOY / "bundle" / "Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT .*cp -R /opt/gocacheprog/\. (\S+?)/?\"\]$", dockerfile, re.M)
    assert entrypoint, "deploy/bundle/Dockerfile: no copying ENTRYPOINT"
    assert Path(entrypoint[1]) / "gocacheprog" == Path(env["GOCACHEPROG"])
    assert Path(entrypoint[1]).is_relative_to(mount["mountPath"])

    # The API server would store exactly this pod: it must pass the schema, and a second pass of the
    # policy (reinvocation, or a retried create) must not add a second helper.
    pod_file = tmp_path / "admitted.json"
    pod_file.write_text(json.dumps(admitted))
    kubernetes_validate(pod_file, "1.36.0", expected=1)
    again = admit(test_pods, admitted, tmp_path)
    assert [c["name"] for c in again["spec"]["initContainers"]] == names


def test_admission_policy_leaves_other_pods_alone(test_pods: Rendered, prow_config: dict[str, Any],
                                                 tmp_path: Path) -> None:
    [job] = [j for j in load_jobs() if j.kind == "presubmit"]
    pod = job_pod(job, prow_config["pod_namespace"], prow_init=True)
    del pod["metadata"]["labels"]["preset-gocachegate"]
    admitted = admit(test_pods, pod, tmp_path)
    assert [c["name"] for c in admitted["spec"]["initContainers"]] == ["clonerefs", "place-entrypoint"]
