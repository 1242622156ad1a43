"""The README's KubeRay RayJob (configs/kuberay/rayjob.yaml) holds together: KubeRay's field
names, batchrun commands and flags that exist, a job file batchrun accepts, and a retry
that resumes."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml

from batchrun.cli.commands import cli
from batchrun.config import validate_config

MANIFEST = Path(__file__).parents[2] / "configs" / "kuberay" / "rayjob.yaml"

RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
               "metadata", "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy",
               "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources",
               "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
               "shutdownAfterJobFinishes", "suspend", "schedule"}
"""RayJobSpec's fields (ray-project/kuberay, ray-operator/apis/ray/v1/rayjob_types.go)."""
RAYCLUSTER_SPEC = {"rayVersion", "headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling",
                   "autoscalerOptions", "headServiceAnnotations", "suspend", "managedBy",
                   "gcsFaultToleranceOptions", "authOptions"}
HEAD_GROUP = {"rayStartParams", "template", "serviceType", "headService", "enableIngress"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams",
                "template", "numOfHosts", "idleTimeoutSeconds", "suspend", "scaleStrategy"}


def documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def test_the_rayjob_uses_only_kuberay_s_field_names() -> None:
    job = documents()["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC
    assert set(spec["rayClusterSpec"]) <= RAYCLUSTER_SPEC
    assert set(spec["rayClusterSpec"]["headGroupSpec"]) <= HEAD_GROUP
    assert all(set(group) <= WORKER_GROUP for group in spec["rayClusterSpec"]["workerGroupSpecs"])
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1


def batchrun_commands(entrypoint: str) -> list[list[str]]:
    """The `batchrun ...` command lines of the entrypoint's shell script."""
    script = shlex.split(entrypoint)[2]
    return [[word for word in shlex.split(part)[1:] if ">" not in word]  # redirections
            for part in re.findall(r"batchrun [^;]*", script)]


def test_every_attempt_resumes_the_run_it_names_or_starts_it() -> None:
    commands = batchrun_commands(documents()["RayJob"]["spec"]["entrypoint"])
    assert [c[0] for c in commands] == ["status", "resume", "run"]
    run_ids = set()
    for name, *args in commands:
        context = cli.commands[name].make_context(name, list(args))  # the flags exist
        run_ids.add(context.params["run_id"])
        assert context.params["state_dir"] == Path("/state")
    assert run_ids == {"$RUN_ID"}  # one run, whichever attempt


def test_the_driver_s_pod_has_the_state_volume_the_run_id_and_the_job_file() -> None:
    docs = documents()
    head = docs["RayJob"]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    container = head["containers"][0]
    assert "RUN_ID" in {variable["name"] for variable in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in head["volumes"]}
    assert mounts["state"] == "/state"
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == \
        docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert volumes["jobs"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]


def test_the_job_file_is_valid_and_keeps_sources_and_staging_outside_the_cluster() -> None:
    text = documents()["ConfigMap"]["data"]["nightly.toml"]
    config = validate_config(tomllib.loads(text), "configs/kuberay/rayjob.yaml")
    assert config.staging.dir.startswith("s3://")
    assert all(path.startswith("s3://") for path in config.source.paths)
