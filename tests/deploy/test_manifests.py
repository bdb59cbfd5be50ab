"""deploy/kustomize: every overlay renders, passes the Kubernetes schemas, and keeps its promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import OVERLAYS, Rendered
from tests.deploy.tools import find, kubernetes_validate

#: The oldest Kubernetes the gate's manifests support, and the newest the schemas know.
GATE_KUBERNETES = ["1.33.0", "1.37.0"]
#: The helper's admission policy is admissionregistration.k8s.io/v1 from 1.36 on.
TEST_PODS_KUBERNETES = ["1.36.0", "1.37.0"]


def test_there_is_an_overlay_for_wif_and_for_gke() -> None:
    assert {"wif", "gke"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", GATE_KUBERNETES)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_the_kubernetes_schemas(overlays: dict[str, Rendered], overlay: str, version: str) -> None:
    rendered = overlays[overlay]
    kubernetes_validate(rendered.path, version, expected=len(rendered.docs))


@pytest.mark.parametrize("version", TEST_PODS_KUBERNETES)
def test_job_namespace_setup_passes_the_kubernetes_schemas(test_pods: Rendered, version: str) -> None:
    kubernetes_validate(test_pods.path, version, expected=len(test_pods.docs))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gate_config_passes_check_config(overlays: dict[str, Rendered], overlay: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(find(overlays[overlay].docs, "ConfigMap", "gocachegate-config")["data"]["config.yaml"])
    out = subprocess.run(
        [sys.executable, "-m", "server.cli", "check-config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert ": ok: " in out.stdout and "storage gcs" in out.stdout, out.stdout


def _pod(rendered: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = find(rendered.docs, "Deployment", "gocachegate")["spec"]["template"]
    return spec


def _gate(rendered: Rendered) -> dict[str, Any]:
    containers = _pod(rendered)["spec"]["containers"]
    assert [c["name"] for c in containers] == ["gate"]
    gate: dict[str, Any] = containers[0]
    return gate


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gate_pods_run_locked_down(overlays: dict[str, Rendered], overlay: str) -> None:
    pod = _pod(overlays[overlay])["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = _gate(overlays[overlay])["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    # Read-only root: the one writable place is an emptyDir on /tmp, where large bodies are spooled.
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = [m for m in _gate(overlays[overlay])["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_resources_and_scaling(overlays: dict[str, Rendered], overlay: str) -> None:
    docs = overlays[overlay].docs
    gate = _gate(overlays[overlay])
    port = {p["name"]: p["containerPort"] for p in gate["ports"]}
    assert gate["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert gate["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert port["http"] == overlays[overlay].gate_config()["server"]["port"]
    assert {"cpu", "memory"} <= set(gate["resources"]["requests"]) and "memory" in gate["resources"]["limits"]

    deployment = find(docs, "Deployment", "gocachegate")
    hpa = find(docs, "HorizontalPodAutoscaler", "gocachegate")
    assert deployment["spec"]["replicas"] >= 2 and hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gocachegate"}

    labels = _pod(overlays[overlay])["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": find(docs, "Service", "gocachegate")["spec"]["selector"],
        "PodDisruptionBudget": find(docs, "PodDisruptionBudget", "gocachegate")["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": find(docs, "NetworkPolicy", "gocachegate")["spec"]["podSelector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        # An empty selector would take every pod of the namespace.
        assert selector and selector.items() <= labels.items(), kind


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_job_pods_and_monitoring_reach_the_gate(
    overlays: dict[str, Rendered], overlay: str, prow_config: dict[str, Any]
) -> None:
    policy = find(overlays[overlay].docs, "NetworkPolicy", "gocachegate")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    sources = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in rule["from"]}
    assert all(set(peer) == {"namespaceSelector"} for peer in rule["from"])
    assert sources == {prow_config["pod_namespace"], "monitoring"}
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_wif_overlay_hands_google_auth_a_federated_token(overlays: dict[str, Rendered]) -> None:
    """The credential file names the projected token file, and the token's audience is the provider."""
    rendered = overlays["wif"]
    pod = _pod(rendered)["spec"]
    gate = _gate(rendered)
    env = {e["name"]: e["value"] for e in gate["env"]}
    mounts = {m["name"]: m["mountPath"] for m in gate["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    credentials_path = Path(env["GOOGLE_APPLICATION_CREDENTIALS"])
    [cm_volume] = [n for n, m in mounts.items() if Path(m) == credentials_path.parent]
    config_map = find(rendered.docs, "ConfigMap", volumes[cm_volume]["configMap"]["name"])
    credentials = json.loads(config_map["data"][credentials_path.name])
    assert credentials["type"] == "external_account"
    assert credentials["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert credentials["token_url"] == "https://sts.googleapis.com/v1/token"
    assert credentials["service_account_impersonation_url"].startswith(
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
    )
    assert credentials["service_account_impersonation_url"].endswith(".iam.gserviceaccount.com:generateAccessToken")

    token_path = Path(credentials["credential_source"]["file"])
    [token_volume] = [n for n, m in mounts.items() if Path(m) == token_path.parent]
    [source] = volumes[token_volume]["projected"]["sources"]
    projected = source["serviceAccountToken"]
    assert projected["path"] == token_path.name
    # Google's STS takes the provider's full resource name as audience, with or without "https:".
    assert projected["audience"] == "https:" + credentials["audience"]
    assert credentials["audience"].startswith("//iam.googleapis.com/projects/")
    assert "/workloadIdentityPools/" in credentials["audience"] and "/providers/" in credentials["audience"]
    # google-auth would ask Cloud Resource Manager for the project number without a project.
    assert rendered.gate_config()["storage"]["project"]


def test_gke_overlay_uses_the_workload_identity_annotation(overlays: dict[str, Rendered]) -> None:
    rendered = overlays["gke"]
    account = find(rendered.docs, "ServiceAccount", "gocachegate")
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    assert _pod(rendered)["spec"]["serviceAccountName"] == "gocachegate"
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in {e["name"] for e in _gate(rendered)["env"]}
