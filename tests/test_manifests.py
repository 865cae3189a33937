"""The kustomize base and overlay render with `kubectl kustomize` into what a GKE cluster running KFP needs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import cron
from pipelines.cli import build_parser
from tests.pipeline_helpers import ROOT

MANIFESTS = ROOT / "manifests"
KUBECTL = shutil.which("kubectl")


def render(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, from `kubectl kustomize` (or, without kubectl, the base's files as written)."""
    if KUBECTL is None:
        documents = [d for f in sorted(folder.glob("*.yaml")) if f.name != "kustomization.yaml"
                     for d in yaml.safe_load_all(f.read_text())]
    else:
        done = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        documents = list(yaml.safe_load_all(done.stdout))
    return {(d["kind"], d["metadata"]["name"]): d for d in documents if d}


def by_kind(objects: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for (k, _), o in objects.items() if k == kind]
    return found


def test_every_manifest_is_valid_yaml() -> None:
    for path in MANIFESTS.rglob("*.yaml"):
        assert all(isinstance(d, dict) for d in yaml.safe_load_all(path.read_text()) if d is not None), path


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (apt-get install kubectl): rendering skipped")
@pytest.mark.parametrize("folder", ["base", "overlays/example"])
def test_kustomize_renders(folder: str) -> None:
    objects = render(MANIFESTS / folder)
    assert {kind for kind, _ in objects} == {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ResourceQuota",
                                              "ConfigMap", "Job"}
    assert all(o["metadata"].get("namespace") == "metaheac" for (kind, _), o in objects.items() if kind != "Namespace")


def test_service_account_uses_workload_identity_without_keys() -> None:
    objects = render(MANIFESTS / "base")
    account = by_kind(objects, "ServiceAccount")
    assert re.fullmatch(r"[\w-]+@[\w-]+\.iam\.gserviceaccount\.com",
                        account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"])
    assert not any(kind == "Secret" for kind, _ in objects)
    job = by_kind(objects, "Job")["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == account["metadata"]["name"]
    assert not any("GOOGLE_APPLICATION_CREDENTIALS" in str(c) or c.get("volumeMounts") for c in job["containers"])
    binding = by_kind(objects, "RoleBinding")
    assert [(s["kind"], s["name"]) for s in binding["subjects"]] == [("ServiceAccount", account["metadata"]["name"])]
    assert by_kind(objects, "ResourceQuota")["spec"]["hard"]["requests.nvidia.com/gpu"]


def _job_argv(objects: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """The recurring-run Job's command line, with $(VAR) taken from its ConfigMap as Kubernetes does."""
    (container,) = by_kind(objects, "Job")["spec"]["template"]["spec"]["containers"]
    config = by_kind(objects, "ConfigMap")
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    return [re.sub(r"\$\((\w+)\)", lambda m: config["data"][m.group(1)], a) for a in container["args"]]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: the overlay cannot be rendered")
def test_recurring_run_job_is_a_valid_schedule_command() -> None:
    base, overlay = render(MANIFESTS / "base"), render(MANIFESTS / "overlays/example")
    assert by_kind(base, "Job")["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "pipelines"]
    args = build_parser().parse_args(_job_argv(base))
    assert (args.command, args.action, args.local) == ("schedule", "create", False)
    assert cron.validate(args.cron) and args.service_account == "metaheac"
    assert args.gpu_node_selector.startswith("cloud.google.com/gke-accelerator=")
    assert args.gpu_toleration == "nvidia.com/gpu"
    assert args.param == ["input_uri=gs://BUCKET/metaheac/raw/[[ScheduledTime.2006-01-02]]"]
    overlaid = build_parser().parse_args(_job_argv(overlay))
    assert overlaid.gpu_node_selector == "cloud.google.com/gke-accelerator=nvidia-tesla-a100"
    assert overlaid.pipeline_root.startswith("gs://my-project-metaheac/")
    image = by_kind(overlay, "Job")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == overlaid.image, shlex.join(_job_argv(overlay))
    account = by_kind(overlay, "ServiceAccount")["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert account == "metaheac-runner@my-project.iam.gserviceaccount.com"


def test_role_is_narrow_and_tokens_are_mounted_only_where_the_api_is_called() -> None:
    objects = render(MANIFESTS / "base")
    rules = by_kind(objects, "Role")["rules"]
    granted = {(r, v) for rule in rules for r in rule["resources"] for v in rule["verbs"]}
    assert not any(resource == "secrets" for resource, _ in granted)
    assert ("pods", "patch") not in granted and not any("*" in str(rule) for rule in rules)
    assert next(rule for rule in rules if "configmaps" in rule["resources"])["resourceNames"] == ["kfp-launcher"]
    assert by_kind(objects, "Job")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False

