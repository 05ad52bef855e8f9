"""The deployment files: docker-compose.yml (checked by Compose itself and by its layout), the Dockerfile, and the
lock files the image and scripts/setup install from."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from services.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CREDITRAIL_SERVICES = ("migrate", "api", "worker")
LINK_SECRET = "receipt-links-0123456789abcdef-0123456789"


def compose_command() -> list[str]:
    """Compose, as the docker CLI's plugin or the standalone command (scripts/ensure-compose installs one)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    assert standalone, "Docker Compose is missing: run scripts/ensure-compose"
    return [standalone]


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    """``compose config`` with nothing in the environment but ``env`` (no Stripe, USDC or database variables)."""
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def raw_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_renders_with_no_stripe_variables_and_the_card_rail_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = compose_config(
        CREDITRAIL_PUBLIC_BASE_URL="https://credits.example.com", CREDITRAIL_RECEIPT_LINK_SECRET=LINK_SECRET
    )
    assert rendered.returncode == 0, rendered.stderr
    services = yaml.safe_load(rendered.stdout)["services"]
    for name in CREDITRAIL_SERVICES:
        # The environment each container gets, as the service's settings read it.
        for key in [key for key in os.environ if key.startswith("CREDITRAIL_")]:
            monkeypatch.delenv(key)
        for key, value in services[name]["environment"].items():
            monkeypatch.setenv(key, "" if value is None else str(value))
        settings = Settings(_env_file=None)
        assert settings.environment == "production"
        assert settings.public_base_url == "https://credits.example.com"
        assert settings.receipt_link_secret.get_secret_value() == LINK_SECRET
        assert settings.stripe_configured is False, name
        assert (settings.usdc_xpub, settings.usdc_chains) == ("", [])
        assert settings.auto_migrate is False  # the one-shot migrate does it, once
        assert settings.database_url.startswith("postgresql://")


def test_compose_refuses_to_render_without_the_public_base_url() -> None:
    rendered = compose_config(CREDITRAIL_RECEIPT_LINK_SECRET=LINK_SECRET)
    assert rendered.returncode != 0
    assert "CREDITRAIL_PUBLIC_BASE_URL" in rendered.stderr


def test_compose_refuses_to_render_without_the_receipt_link_secret() -> None:
    rendered = compose_config(CREDITRAIL_PUBLIC_BASE_URL="https://credits.example.com")
    assert rendered.returncode != 0
    assert "CREDITRAIL_RECEIPT_LINK_SECRET" in rendered.stderr


def test_compose_migrates_once_before_the_api_and_worker_start() -> None:
    services = raw_compose()["services"]
    assert services["migrate"]["command"] == ["creditrail", "migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_compose_services_restart_and_report_their_health() -> None:
    services = raw_compose()["services"]
    for name in ("postgres", "api", "worker", "proxy"):
        assert services[name]["restart"] == "unless-stopped", name
        assert services[name]["healthcheck"]["test"], name
    assert any("/healthz" in part for part in services["api"]["healthcheck"]["test"])
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "creditrail", "jobs"]


def test_compose_api_replicas_publish_no_port_and_the_proxy_reaches_them() -> None:
    services = raw_compose()["services"]
    api = services["api"]
    assert "ports" not in api
    assert api["expose"] == ["8000"]
    assert api["deploy"]["replicas"] >= 2
    proxy = services["proxy"]
    assert len(proxy["ports"]) == 1
    [caddyfile] = [volume.split(":")[0] for volume in proxy["volumes"] if "Caddyfile" in volume]
    config = (ROOT / caddyfile).read_text()
    assert re.search(r"dynamic a \{\s*name api\s*port 8000", config)
    text = COMPOSE_FILE.read_text()
    assert "--scale api=" in text  # the comment saying how traffic reaches the replicas and how to add some


def test_compose_states_every_setting_an_operator_chooses() -> None:
    environment = raw_compose()["x-creditrail"]["environment"]
    assert environment["CREDITRAIL_STRIPE_SECRET_KEY"] == "${CREDITRAIL_STRIPE_SECRET_KEY:-}"
    assert environment["CREDITRAIL_STRIPE_WEBHOOK_SECRETS"] == "${CREDITRAIL_STRIPE_WEBHOOK_SECRETS:-}"
    assert environment["CREDITRAIL_USDC_XPUB"] == "${CREDITRAIL_USDC_XPUB:-}"
    assert environment["CREDITRAIL_USDC_CHAINS"] == "${CREDITRAIL_USDC_CHAINS:-}"
    assert environment["CREDITRAIL_PUBLIC_BASE_URL"].startswith("${CREDITRAIL_PUBLIC_BASE_URL:?")
    assert environment["CREDITRAIL_RECEIPT_LINK_SECRET"].startswith("${CREDITRAIL_RECEIPT_LINK_SECRET:?")


def test_compose_sizes_postgresql_by_variables_explained_in_a_comment() -> None:
    command = raw_compose()["services"]["postgres"]["command"]
    assert "shared_buffers=${POSTGRES_SHARED_BUFFERS:-" in command
    assert "2GB" not in command.replace("max_wal_size=${POSTGRES_MAX_WAL_SIZE:-2GB}", "")
    comments = " ".join(line for line in COMPOSE_FILE.read_text().splitlines() if line.strip().startswith("#"))
    assert "shared_buffers about a quarter" in comments


def test_dockerfile_runs_unprivileged_with_a_health_check_from_the_lock() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert "/healthz" in (ROOT / "Dockerfile").read_text()
    assert "RUN pip install -r requirements.lock" in lines
    assert "RUN pip install --no-deps . && rm -rf build" in lines


# --- the lock files --------------------------------------------------------------------------------------------


def pins(lock: Path) -> dict[str, tuple[str, Marker | None]]:
    """``name -> (version, marker)`` for every requirement of a lock file; each must be pinned exactly."""
    found: dict[str, tuple[str, Marker | None]] = {}
    for line in lock.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1, f"{lock.name}: not pinned: {line}"
        assert specifiers[0].operator == "==", f"{lock.name}: not pinned: {line}"
        found[canonicalize_name(requirement.name)] = (specifiers[0].version, requirement.marker)
    return found


def declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(entry) for entry in listed]


@pytest.mark.parametrize(("lock", "extras"), [("requirements.lock", [None]), ("requirements-dev.lock", [None, "dev"])])
def test_lock_files_pin_every_declared_dependency_within_its_bounds(lock: str, extras: list[str | None]) -> None:
    pinned = pins(ROOT / lock)
    for extra in extras:
        for requirement in declared(extra):
            name = canonicalize_name(requirement.name)
            assert name in pinned, f"{lock} lacks {requirement}: run `make lock`"
            assert requirement.specifier.contains(pinned[name][0], prereleases=True), (
                f"{lock}: {name} outside {requirement}"
            )


def test_the_development_environment_is_installed_from_the_lock() -> None:
    for name, (pinned_version, marker) in pins(ROOT / "requirements-dev.lock").items():
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is in requirements-dev.lock but not installed: run scripts/setup")
        assert installed == pinned_version, f"{name} {installed} installed, {pinned_version} locked: run scripts/setup"
