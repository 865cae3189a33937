"""The image, built (or reused when its inputs are unchanged) by docker/build.sh, runs the components: the
console script, TorchX's local_docker scheduler and the DAG under kfp.local's DockerRunner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import filelock
import pytest
import yaml
from kfp.dsl.graph_component import GraphComponent

from components.spec import pinned
from metaheac import __version__
from pipelines.cli import main
from pipelines.dag import TrainingOptions
from pipelines.local import LocalRun, run_local
from pipelines.options import build_pipeline
from tests.pipeline_helpers import BUILD_LOCK, ROOT, TINY_PARAMS

COMPONENTS = "components/torchx_components.py"
# What docker/Dockerfile copies into /app; nothing else of the checkout (no tests, .venv, data).
APP_FILES = {"README.md", "components", "constraints.txt", "metaheac", "pipelines", "pyproject.toml", "setup.cfg"}


@dataclass(frozen=True)
class Image:
    engine: str
    tag: str  # metaheac:VERSION, as docker/build.sh tags it
    reference: str  # what build.sh printed last: the image by digest


def _engine() -> str | None:
    """docker where a daemon answers, else podman (the order of docker/engine.sh)."""
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    return "podman" if shutil.which("podman") else None


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    """The CPU image, and the Docker API that kfp.local and TorchX reach through DOCKER_HOST (podman's
    own service, on a socket of this test's, where podman is the engine)."""
    engine = _engine()
    if engine is None:
        pytest.skip("containers: neither a running Docker nor podman here (scripts/test installs podman as root)")
    with pytest.MonkeyPatch.context() as env:
        if engine == "podman":
            env.setenv("CONTAINERS_CONF", os.environ.get("CONTAINERS_CONF", str(ROOT / "docker/containers.conf")))
        # one build at a time when pytest-xdist's two workers both reach this module; the later one reuses it
        with filelock.FileLock(BUILD_LOCK):
            start = time.perf_counter()
            built = subprocess.run([str(ROOT / "docker/build.sh")], cwd=ROOT, env={**os.environ, "ENGINE": engine},
                                   capture_output=True, text=True)
        if built.returncode == 2:  # a missing prerequisite, which build.sh names on one line
            pytest.skip(f"containers: {built.stderr.strip().splitlines()[-1]}")
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
        print(f"docker/build.sh: {time.perf_counter() - start:.0f} s\n{built.stdout[-600:]}")
        reference = built.stdout.strip().splitlines()[-1]
        service = None
        if engine == "podman":
            socket = tmp_path_factory.mktemp("podman") / "podman.sock"
            service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"])
            for _ in range(100):
                if socket.exists():
                    break
                time.sleep(0.1)
            env.setenv("DOCKER_HOST", f"unix://{socket}")
        try:
            yield Image(engine, f"metaheac:{__version__}", reference)
        finally:
            if service is not None:
                service.terminate()
                service.wait(timeout=30)


def run_in(image: Image, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([image.engine, "run", "--rm", image.reference, *command], capture_output=True, text=True,
                          timeout=300)


def test_the_image_runs_the_console_script_as_its_own_user_and_carries_only_the_package(image: Image) -> None:
    assert "@sha256:" in image.reference
    done = run_in(image, "metaheac", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: metaheac")
    done = run_in(image, "sh", "-c", "id -u; ls /app")
    assert done.returncode == 0, done.stderr
    uid, *files = done.stdout.split()
    assert uid == "10001" and set(files) == APP_FILES


def test_compile_names_the_image_the_tests_ran_for_every_task(image: Image, tmp_path: Path) -> None:
    assert pinned(image.tag) == image.reference  # the tag resolves to the digest build.sh printed
    path = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(path), "--image", image.tag, "--cuda-image", image.reference]) == 0
    spec = next(yaml.safe_load_all(path.read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {image.reference}


def torchx(image: Image, data: Path, step: str, *args: str) -> None:
    """`torchx run -s local_docker` of one step in the image, `data` mounted at /data."""
    command = [str(Path(sys.executable).parent / "torchx"), "run", "-s", "local_docker", "--workspace", "",
               f"{COMPONENTS}:{step}", "--image", image.reference, "--mounts", f"type=bind,src={data},dst=/data",
               *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def test_preprocess_train_adapt_evaluate_run_in_the_image_through_torchx(image: Image, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the image's user writes the outputs
    torchx(image, data, "generate", "--output", "/data/raw", "--users", str(TINY_PARAMS["generate_users"]),
           "--campaigns", str(TINY_PARAMS["generate_campaigns"]))
    torchx(image, data, "preprocess", "--input", "/data/raw", "--output", "/data/dataset",
           "--cold_threshold", str(TINY_PARAMS["preprocess_cold_threshold"]))
    dataset = ["--dataset", "/data/dataset"]
    torchx(image, data, "train", *dataset, "--output", "/data/model", "--method", "LR", "--max_steps", "2")
    torchx(image, data, "adapt", *dataset, "--model", "/data/model", "--output", "/data/scores", "--epochs", "1")
    torchx(image, data, "evaluate", *dataset, "--scores", "/data/scores", "--output", "/data/evaluation")
    assert (data / "evaluation" / "report.html").exists()
    assert any(line.startswith("LR ") for line in (data / "evaluation" / "table.txt").read_text().splitlines())


def evaluation(run: LocalRun) -> dict[str, object]:
    return json.loads((run.folder / "evaluate" / "output" / "metrics.json").read_text())


def dag(image: Image, **overrides: object) -> tuple[GraphComponent, dict[str, object]]:
    """The demo DAG (its default methods) with one adapt task, in the image; its tiny arguments."""
    options = TrainingOptions(shards=1, image=image.reference, cuda_image=image.reference, caching=False)
    kinds = {p.name: p.annotation for p, _ in options.parameters()}
    arguments = {k: kinds[k](v) for k, v in {**TINY_PARAMS, **overrides}.items() if k in kinds}
    return build_pipeline(options), arguments


def test_the_dag_in_containers_gives_the_metrics_of_the_dag_in_subprocesses(image: Image, tmp_path: Path) -> None:
    pipeline, arguments = dag(image)
    lines: list[str] = []
    in_containers = run_local(pipeline, arguments, tmp_path / "containers", caching=False, echo=lines.append,
                              containers=True)
    assert len(lines) == 5 and all(line.rstrip().endswith(" ran") for line in lines), lines
    assert "Found image" in (in_containers.folder / "logs" / "preprocess.log").read_text()  # kfp.local's, per task
    in_subprocesses = run_local(pipeline, arguments, tmp_path / "subprocesses", caching=False, echo=lines.append)
    assert evaluation(in_containers) == evaluation(in_subprocesses)


def test_a_failed_task_in_a_container_fails_the_run(image: Image, tmp_path: Path) -> None:
    pipeline, arguments = dag(image, preprocess_source="official")  # generate's files are not the official ones
    with pytest.raises(RuntimeError, match=r"^task preprocess failed: "):
        run_local(pipeline, arguments, tmp_path, caching=False, echo=lambda line: None, containers=True)
