"""The Dockerfile, docker-compose.yml and nginx.conf, checked without a Docker engine.

There is no Docker daemon, compose plugin or hadolint here, so: the compose
files are validated against the Compose Specification's JSON schema (the copy
check-jsonschema ships, no network), and their structure is checked against
what the app needs: replicas behind nginx, Redis as the shared store,
healthchecks everywhere, nginx's body limit equal to the app's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from service.config import Settings

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "deploy" / "docker-compose.gpu.yml"
NGINX = ROOT / "deploy" / "nginx.conf"
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def nginx() -> str:
    return re.sub(r"#.*", "", NGINX.read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_compose_files_match_the_compose_spec_schema():
    checker = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    if not Path(checker).exists():
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]')")
    result = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE), str(GPU_OVERRIDE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_replicas_behind_nginx_share_redis(compose):
    services = compose["services"]
    assert set(services) >= {"api", "nginx", "redis"}
    api = services["api"]
    assert api["deploy"]["replicas"] >= 2
    assert "ports" not in api  # reached only through nginx
    assert api["environment"]["GRADSERVE_STORE"].startswith("redis://redis:6379")
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["api"]["condition"] == "service_healthy"
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert redis_command[redis_command.index("--appendfsync") + 1] == "always"  # acknowledged = on disk


def test_every_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), name
    assert any("/healthz" in part for part in compose["services"]["api"]["healthcheck"]["test"])


def test_nginx_body_limit_equals_the_apps(compose, nginx):
    (size, unit), = re.findall(r"client_max_body_size\s+(\d+)([kKmMgG]?)\s*;", nginx)
    nginx_bytes = int(size) * UNITS[unit.lower()]
    app_default = Settings.model_fields["max_body_bytes"].default
    assert nginx_bytes == app_default
    assert int(compose["services"]["api"]["environment"]["GRADSERVE_MAX_BODY_BYTES"]) == app_default


def test_nginx_proxies_to_the_api_service(compose, nginx):
    volumes = compose["services"]["nginx"]["volumes"]
    assert any(v.split(":")[0] == "./deploy/nginx.conf" and v.split(":")[1] == "/etc/nginx/nginx.conf"
               for v in volumes)
    assert re.search(r"server\s+api:8000\b", nginx)
    assert "8000" in [str(p) for p in compose["services"]["api"]["expose"]]
    assert re.search(r"location[^{]*/train[^{]*\{[^}]*proxy_buffering\s+off", nginx)  # SSE passes through
    assert nginx.count("{") == nginx.count("}")


@pytest.mark.parametrize("path", [ROOT / "Dockerfile", ROOT / "deploy" / "Dockerfile.gpu"], ids=["cpu", "gpu"])
def test_dockerfile_is_multistage_nonroot_and_healthchecked(path):
    instructions = dockerfile_instructions(path)
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert len(stages) >= 2
    final = instructions[stages[-1]:]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(op == "COPY" and args.startswith("--from=build") for op, args in final)
    healthchecks = [args for op, args in final if op == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0]
    assert any(op == "VOLUME" and "/data" in args for op, args in final)
    assert any(op == "ENV" and "GRADSERVE_DATA_DIR=/data" in args for op, args in final)
    assert ("CMD", '["gradserve", "serve"]') in final


@pytest.mark.parametrize("path", [ROOT / "Dockerfile", ROOT / "deploy" / "Dockerfile.gpu"], ids=["cpu", "gpu"])
def test_the_build_stage_copies_every_package_the_distribution_installs(path):
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    assert packages >= {"engine", "frontends", "service"}
    instructions = dockerfile_instructions(path)
    build = instructions[: [i for i, (op, _) in enumerate(instructions) if op == "FROM"][1]]
    copied = {args.split()[0] for op, args in build if op == "COPY" and not args.startswith("--")}
    assert packages <= copied, f"{path.name} does not copy {sorted(packages - copied)} before `pip install .`"
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert not packages & ignored


def test_gpu_variant_reserves_a_gpu_and_installs_cupy():
    override = yaml.safe_load(GPU_OVERRIDE.read_text())["services"]["api"]
    devices = override["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    dockerfile = ROOT / override["build"]["context"] / override["build"]["dockerfile"]
    assert dockerfile.exists()
    assert '".[gpu]"' in dockerfile.read_text()
    assert "cupy" in (ROOT / "pyproject.toml").read_text().split("gpu =", 1)[1].splitlines()[0]


def test_dockerignore_keeps_local_state_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "data", ".git"} <= ignored
