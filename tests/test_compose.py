"""docker-compose.yml, the Dockerfiles and the deploy scripts against the code, so they cannot drift.

Every variable a container gets with its service's prefix must name a field of that service's
settings (read at test time) and parse; images build from the repository root with paths that
exist; the one-shots, healthchecks and secrets volumes are where the services expect them. The
PostgreSQL init script and the migrations run for real against the test server."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
TOOLS_DOCKERFILE = "deploy/tools.Dockerfile"
IDP_ENV = {
    "CEF_IDP_ISSUER": "https://idp.example.nhs.uk",
    "CEF_IDP_JWKS_URL": "https://idp.example.nhs.uk/.well-known/jwks.json",
}
# What the web app's registration at the identity provider gives; the secret file is a path on
# the host, which only `docker compose` itself reads.
WEB_ENV = {
    "CEF_WEB_PUBLIC_URL": "https://cef.example.nhs.uk",
    "CEF_WEB_OIDC_CLIENT_ID": "cef-web-client",
    "CEF_WEB_OIDC_CLIENT_SECRET_FILE": "/etc/cef/web-oidc-client-secret",
}
COMPOSE_ENV = IDP_ENV | WEB_ENV


@dataclass(frozen=True)
class Service:
    name: str  # compose service name = the service's own name (audience, issuer)
    prefix: str
    module: str
    package: str
    dockerfile: str
    migrate: str  # the migration one-shot
    port: int
    secrets_volume: str


SERVICES = {
    s.name: s
    for s in (
        Service(
            "tokeniser",
            "CEF_TOKENISER_",
            "cef_tokeniser",
            "cef-tokeniser",
            "services/tokeniser/Dockerfile",
            "migrate-tokeniser",
            8001,
            "tokeniser-secrets",
        ),
        Service(
            "cef-api",
            "CEF_API_",
            "cef_api",
            "cef-api",
            "services/cef-api/Dockerfile",
            "migrate-api",
            8002,
            "api-secrets",
        ),
        Service(
            "audit",
            "CEF_AUDIT_",
            "cef_audit",
            "cef-audit",
            "services/audit/Dockerfile",
            "migrate-audit",
            8003,
            "audit-secrets",
        ),
        Service(
            "web",
            "CEF_WEB_",
            "cef_web",
            "cef-web",
            "services/web/Dockerfile",
            "migrate-web",
            8000,
            "web-secrets",
        ),
    )
}
PREFIXES = tuple(s.prefix for s in SERVICES.values())


# --- reading the compose file as `docker compose` does ---------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("named")
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        return current or ""

    return _VARIABLE.sub(substitute, value)


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text())
    return dict(interpolate(raw, COMPOSE_ENV if env is None else env))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def environment(container: dict[str, Any]) -> dict[str, str]:
    env = container.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def mounts(container: dict[str, Any]) -> dict[str, str]:
    """Container path → source (a named volume, or a path relative to the repository)."""
    result = {}
    for volume in container.get("volumes", []):
        source, target = volume.split(":")[:2]
        result[target] = source
    return result


def mounted_volume(container: dict[str, Any], path: str) -> str | None:
    """The volume (or bind source) a path inside the container lives on."""
    best = None
    for target, source in mounts(container).items():
        if (path == target or path.startswith(target.rstrip("/") + "/")) and (
            best is None or len(target) > len(best[0])
        ):
            best = (target, source)
    return best[1] if best else None


def secret_files(container: dict[str, Any]) -> dict[str, str]:
    """Path inside the container → the compose secret mounted there (/run/secrets/<name> unless a
    target says otherwise)."""
    result = {}
    for secret in container.get("secrets", []):
        source, target = (
            (secret, secret) if isinstance(secret, str) else (secret["source"], secret.get("target"))
        )
        target = target or source
        result[target if target.startswith("/") else f"/run/secrets/{target}"] = source
    return result


def settings_class(service: Service) -> Any:
    return importlib.import_module(f"{service.module}.config").Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CEF_ variable of this machine leaks into settings built from the compose file."""
    for name in list(os.environ):
        if name.startswith("CEF_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(ROOT / "deploy")  # no .env file here
    return monkeypatch


def build_settings(service: Service, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        return settings_class(service)()
    finally:
        for name in env:
            monkeypatch.delenv(name)


def container_settings(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch, secrets_dir: Path
) -> Any:
    """A service's settings from its compose environment, with each compose secret the
    environment names (a *_FILE under /run/secrets) stood in for by a file of its own name in
    `secrets_dir`: settings read those files when they are built."""
    container = compose["services"][name]
    env = environment(container)
    attached = secret_files(container)
    for variable, value in env.items():
        if variable.endswith("_FILE") and value.startswith("/run/secrets/"):
            assert value in attached, f"{name}: {variable} names {value}, but no secret is mounted there"
            stand_in = secrets_dir / attached[value]
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text(f"secret of {attached[value]}\n")
            env[variable] = str(stand_in)
    return build_settings(SERVICES[name], env, monkeypatch)


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- the shape of the deployment --------------------------------------------------------------------


def test_the_deployment_has_every_part(compose: dict[str, Any]) -> None:
    expected = {"postgres", "keys-init", *SERVICES, *(s.migrate for s in SERVICES.values())}
    assert set(compose["services"]) == expected


def test_the_identity_provider_is_required() -> None:
    with pytest.raises(MissingVariable, match="CEF_IDP_ISSUER"):
        load_compose({**WEB_ENV, "CEF_IDP_JWKS_URL": "https://idp/jwks"})
    with pytest.raises(MissingVariable, match="CEF_IDP_JWKS_URL"):
        load_compose({**WEB_ENV, "CEF_IDP_ISSUER": "https://idp"})


@pytest.mark.parametrize("variable", sorted(WEB_ENV))
def test_the_web_apps_registration_is_required(variable: str) -> None:
    # No default address, client id or secret file: a wrong one would only show at sign-in.
    env = {k: v for k, v in COMPOSE_ENV.items() if k != variable}
    with pytest.raises(MissingVariable, match=variable):
        load_compose(env)
    with pytest.raises(MissingVariable, match=variable):
        load_compose(env | {variable: ""})


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$$SET ${SET} $SET ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d}", env) == "$SET x x d d "
    with pytest.raises(MissingVariable):
        interpolate("${EMPTY:?needed}", env)


def test_named_volumes_are_declared_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, container in compose["services"].items():
        for target, source in mounts(container).items():
            assert target.startswith("/"), (name, target)
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} uses volume {source}, not declared"
                used.add(source)
    assert used == declared


def test_secrets_are_declared_files_and_mounted_only_where_read(compose: dict[str, Any]) -> None:
    declared = compose.get("secrets", {})
    used: dict[str, set[str]] = {}
    for name, container in compose["services"].items():
        for source in secret_files(container).values():
            assert source in declared, f"{name} uses secret {source}, not declared"
            used.setdefault(source, set()).add(name)
    assert set(used) == set(declared)
    # The OIDC client secret comes from the file the operator names, and only the web app sees it.
    assert declared["web-oidc-client-secret"] == {"file": WEB_ENV["CEF_WEB_OIDC_CLIENT_SECRET_FILE"]}
    assert used["web-oidc-client-secret"] == {"web"}
    # Never a value in the compose file itself.
    assert "environment" not in declared["web-oidc-client-secret"]
    assert "CEF_WEB_OIDC_CLIENT_SECRET" not in environment(compose["services"]["web"])


def test_postgres(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:16")
    assert "pg_isready" in pg["healthcheck"]["test"]
    assert "--host=127.0.0.1" in pg["healthcheck"]["test"]
    assert "ports" not in pg
    init = mounts(pg)
    script = next(src for target, src in init.items() if target.startswith("/docker-entrypoint-initdb.d/"))
    assert (ROOT / script).resolve() == ROOT / "deploy" / "postgres" / "init.sh"
    assert os.access(ROOT / script, os.X_OK)
    env = environment(pg)
    assert mounted_volume(pg, env["POSTGRES_PASSWORD_FILE"]) == "db-init-secrets"
    assert mounted_volume(pg, "/run/cef-db") == "db-init-secrets"  # init.sh's default secrets dir
    assert compose["networks"]["db"]["internal"] is True
    assert pg["depends_on"]["keys-init"]["condition"] == "service_completed_successfully"


def test_keys_init_writes_every_secrets_volume(compose: dict[str, Any]) -> None:
    init = compose["services"]["keys-init"]
    assert init["build"] == {"context": ".", "dockerfile": TOOLS_DOCKERFILE}
    assert init["restart"] == "no"
    assert init["network_mode"] == "none"
    command = init["command"]
    assert command[:2] == ["python", "/app/deploy/init_secrets.py"]
    root = command[command.index("--root") + 1]
    script = load_script("init_secrets")
    layout = {f"{root}/db-init": "db-init-secrets", f"{root}/migrate": "migrate-secrets"}
    layout |= {f"{root}/{sdb.service}": SERVICES[sdb.service].secrets_volume for sdb in script.DATABASES}
    assert mounts(init) == layout
    # The options it is given are the script's own.
    options = {a for a in command[2:] if a.startswith("--")}
    assert options <= {"--root", "--service-uid", "--postgres-uid", "--db-host", "--db-port"}
    assert command[command.index("--postgres-uid") + 1] == "999"  # postgres:16 (Debian) runs as 999
    assert command[command.index("--service-uid") + 1] == "10001"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_migration_one_shot(compose: dict[str, Any], name: str, clean_env: pytest.MonkeyPatch) -> None:
    service = SERVICES[name]
    one_shot = compose["services"][service.migrate]
    assert one_shot["build"] == {"context": ".", "dockerfile": TOOLS_DOCKERFILE}
    assert one_shot["restart"] == "no"
    assert one_shot["command"] == ["cef", "migrate", "--service", name]
    assert one_shot["depends_on"]["postgres"]["condition"] == "service_healthy"
    from cef_cli.up import _services

    assert name in {run.name for run in _services(ROOT / "var")}
    env = environment(one_shot)
    assert set(env) == {f"{service.prefix}DATABASE_URL"}
    settings = build_settings(service, env, clean_env)
    url = make_url(settings.effective_database_url)
    script = load_script("init_secrets")
    sdb = next(d for d in script.DATABASES if d.service == name)
    assert (url.get_backend_name(), url.host, url.database, url.username) == (
        "postgresql",
        "postgres",
        sdb.database,
        sdb.owner_role,
    )
    assert url.password is None
    assert mounted_volume(one_shot, str(url.query["passfile"])) == "migrate-secrets"


# --- each service's environment against its settings --------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_variable_names_a_setting(compose: dict[str, Any], name: str) -> None:
    service = SERVICES[name]
    fields = set(settings_class(service).model_fields)
    env = environment(compose["services"][name])
    for variable in env:
        assert variable.startswith(service.prefix), f"{name} gets {variable}, which it never reads"
        field = variable.removeprefix(service.prefix).lower()
        assert field in fields, f"{variable}: {settings_class(service).__module__} has no field {field!r}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_the_environment_parses_as_production_settings(
    compose: dict[str, Any], name: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    service = SERVICES[name]
    container = compose["services"][name]
    try:
        settings = container_settings(compose, name, clean_env, tmp_path)
    except ValidationError as exc:
        pytest.fail(f"{name}'s environment in docker-compose.yml does not parse: {exc}")
    assert settings.environment == "production"
    assert settings.dev_issuer_enabled is False
    assert settings.service_name == name
    assert settings.port == service.port
    assert settings.host == "0.0.0.0"
    assert settings.log_format == "json"
    # Keys come from the secrets volume the keys-init one-shot wrote, read-only.
    key = str(settings.signing_key_file)
    assert mounted_volume(container, key) == service.secrets_volume
    assert f"{service.secrets_volume}:/run/cef:ro" in container["volumes"]
    assert Path(key).name == f"{name}.pem"  # the name init_secrets.py gives it
    assert mounted_volume(container, str(settings.data_dir)) is not None  # writable despite read_only
    url = make_url(settings.effective_database_url)
    script = load_script("init_secrets")
    sdb = next(d for d in script.DATABASES if d.service == name)
    assert (url.host, url.database, url.username, url.password) == (
        "postgres",
        sdb.database,
        sdb.app_role,
        None,
    )
    assert mounted_volume(container, str(url.query["passfile"])) == service.secrets_volume
    if name == "tokeniser":
        assert mounted_volume(container, str(settings.master_key_file)) == service.secrets_volume
        assert Path(str(settings.master_key_file)).name == script.MASTER_KEY_NAME
    if name == "web":
        # People sign in at the identity provider the services trust, and come back to the HTTPS
        # address the operator gave; the client secret was read from the mounted secret.
        assert settings.oidc_issuer == IDP_ENV["CEF_IDP_ISSUER"]
        assert settings.oidc_client_id == WEB_ENV["CEF_WEB_OIDC_CLIENT_ID"]
        assert settings.public_base_url == WEB_ENV["CEF_WEB_PUBLIC_URL"]
        assert settings.effective_cookie_secure is True
        assert settings.oidc_client_secret is not None
        assert settings.oidc_client_secret.get_secret_value() == "secret of web-oidc-client-secret"
        assert environment(container)["CEF_WEB_OIDC_CLIENT_SECRET_FILE"] in secret_files(container)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_issuers_are_the_identity_provider_and_peers_jwks(
    compose: dict[str, Any], name: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = container_settings(compose, name, clean_env, tmp_path)
    if name == "web":
        # People sign in to the web app; it verifies no bearer token, so it trusts no issuer.
        assert settings.trusted_issuers == []
        return
    issuers = {i.issuer: i for i in settings.trusted_issuers}
    idp = issuers.pop(IDP_ENV["CEF_IDP_ISSUER"])
    assert idp.jwks_url == IDP_ENV["CEF_IDP_JWKS_URL"]
    for peer_name, issuer in issuers.items():
        peer = SERVICES[peer_name]
        assert issuer.jwks_url == f"http://{peer_name}:{peer.port}/.well-known/jwks.json"
        assert issuer.jwks_file is None
        assert issuer.allowed_scopes, f"{name} must limit what {peer_name}'s key may grant"
    callers = {"tokeniser": {"cef-api"}, "audit": {"cef-api", "tokeniser", "web"}, "cef-api": {"web"}}
    assert set(issuers) == callers[name]


# What the web app's key may grant, as the deployment must say it: the scopes of its pages.
WEB_GRANTS = {
    "cef-api": ["invoices:read", "invoices:submit", "invoices:validate", "reports:read"],
    "audit": ["audit:write", "audit:read"],
}


@pytest.mark.parametrize("name", ["tokeniser", "cef-api", "audit"])
def test_the_web_apps_key_grants_only_its_pages_scopes(
    compose: dict[str, Any], name: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cef_cli.up import _trusted_scopes

    settings = container_settings(compose, name, clean_env, tmp_path)
    web = [i for i in settings.trusted_issuers if i.issuer == "web"]
    if name not in WEB_GRANTS:
        # People never call the tokeniser, through the web app or otherwise.
        assert web == []
        assert _trusted_scopes(name, "web") is None
        return
    (issuer,) = web
    assert issuer.jwks_url == "http://web:8000/.well-known/jwks.json"
    assert issuer.allowed_scopes is not None
    assert sorted(issuer.allowed_scopes) == sorted(WEB_GRANTS[name])
    assert len(issuer.allowed_scopes) == len(set(issuer.allowed_scopes))
    # The same trust `cef up` gives, so the laptop and the deployment cannot disagree.
    assert sorted(_trusted_scopes(name, "web") or []) == sorted(WEB_GRANTS[name])
    assert "reference:write" not in issuer.allowed_scopes


@pytest.mark.parametrize("name", ["tokeniser", "cef-api", "web"])
def test_peer_urls_point_at_the_peers(
    compose: dict[str, Any], name: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = container_settings(compose, name, clean_env, tmp_path)
    assert settings.audit_url == "http://audit:8003"
    if name == "cef-api":
        assert settings.tokeniser_url == "http://tokeniser:8001"
    if name == "web":
        assert settings.cef_api_url == "http://cef-api:8002"
    peers = {"tokeniser": ("audit",), "cef-api": ("audit", "tokeniser"), "web": ("audit", "cef-api")}
    for peer in peers[name]:
        assert compose["services"][name]["depends_on"][peer]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_container(compose: dict[str, Any], name: str) -> None:
    service = SERVICES[name]
    container = compose["services"][name]
    assert container["build"] == {"context": ".", "dockerfile": service.dockerfile}
    assert container["depends_on"][service.migrate]["condition"] == "service_completed_successfully"
    assert container["depends_on"]["postgres"]["condition"] == "service_healthy"
    command = container["command"]
    assert command[:3] == ["uvicorn", "--factory", f"{service.module}.main:create_app"]
    assert command[command.index("--port") + 1] == str(service.port)
    assert command[command.index("--host") + 1] == "0.0.0.0"
    health = " ".join(container["healthcheck"]["test"])
    assert f"http://127.0.0.1:{service.port}/readyz" in health
    assert container["ports"] == [f"127.0.0.1:{service.port}:{service.port}"]
    assert container["read_only"] is True
    assert container["cap_drop"] == ["ALL"]
    assert set(container["networks"]) == {"db", "services"}
    assert dockerfile(service.dockerfile).cmd == command  # the image runs alone the same way


# --- the Dockerfiles ------------------------------------------------------------------------------


@dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]]

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    @property
    def cmd(self) -> list[str]:
        (cmd,) = self.all("CMD")
        return list(json.loads(cmd))


def dockerfile(relative: str) -> Dockerfile:
    path = ROOT / relative
    text = re.sub(r"\\\n", " ", path.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return Dockerfile(path, instructions)


def _dockerignored(path: str) -> bool:
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for candidate in candidates:
            if any(fnmatch(p, candidate) or fnmatch(p, "*/" + candidate) for p in prefixes):
                ignored = not negate
                break
    return ignored


ALL_DOCKERFILES = [s.dockerfile for s in SERVICES.values()] + [TOOLS_DOCKERFILE]


@pytest.mark.parametrize("relative", ALL_DOCKERFILES)
def test_dockerfile_copies_existing_paths_from_the_root(relative: str) -> None:
    df = dockerfile(relative)
    for args in df.all("COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        if args.startswith("--from="):
            continue
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"{relative}: COPY {source}: no such path in the repository"
            assert not _dockerignored(source), f"{relative}: COPY {source} is excluded by .dockerignore"


@pytest.mark.parametrize("relative", ALL_DOCKERFILES)
def test_dockerfile_is_multi_stage_uv_and_non_root(relative: str) -> None:
    df = dockerfile(relative)
    stages = df.all("FROM")
    assert any(s.endswith(" AS builder") for s in stages)
    assert stages[-1].endswith(" AS runtime")
    syncs = [r for r in df.all("RUN") if "uv sync" in r]
    assert len(syncs) == 2
    for run in syncs:
        assert "--mount=type=cache,target=/root/.cache/uv" in run
        assert "--frozen" in run
        assert "--no-dev" in run
    assert "--no-install-workspace" in syncs[0]
    assert "--no-editable" in syncs[1]
    runtime = df.instructions[[i for i, (kw, _) in enumerate(df.instructions) if kw == "FROM"][-1] :]
    user = [args for kw, args in runtime if kw == "USER"]
    assert user
    assert user[-1].split(":")[0] not in ("0", "root")
    assert any(kw == "COPY" and args.startswith("--from=builder /app/.venv") for kw, args in runtime)
    # The workspace members uv must see to read the workspace.
    copied = " ".join(df.all("COPY"))
    for member in _workspace_members():
        assert f"{member}/pyproject.toml" in copied, f"{relative} does not copy {member}/pyproject.toml"


def _workspace_members() -> list[str]:
    import tomllib

    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"])


def _package_name(member: str) -> str:
    import tomllib

    return str(tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]["name"])


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_dockerfile_installs_and_runs_its_package(name: str) -> None:
    service = SERVICES[name]
    df = dockerfile(service.dockerfile)
    member = str(Path(service.dockerfile).parent)
    assert _package_name(member) == service.package
    for run in (r for r in df.all("RUN") if "uv sync" in r):
        assert run.split("--package ")[1].split()[0] == service.package
    copied = " ".join(df.all("COPY"))
    assert f"{member}/src" in copied
    assert "services/common/src" in copied
    module, _, factory = df.cmd[2].partition(":")
    assert callable(getattr(importlib.import_module(module), factory))
    assert df.all("EXPOSE") == [str(service.port)]
    (health,) = df.all("HEALTHCHECK")
    assert f"http://127.0.0.1:{service.port}/readyz" in health
    env = " ".join(df.all("ENV"))
    assert f"{service.prefix}ENVIRONMENT=production" in env  # an image started bare is production
    fields = settings_class(service).model_fields
    for variable in re.findall(r"\b(CEF_[A-Z_]+)=", env):
        assert variable.removeprefix(service.prefix).lower() in fields


def test_tools_dockerfile_holds_the_cli_and_the_keys_script() -> None:
    df = dockerfile(TOOLS_DOCKERFILE)
    for run in (r for r in df.all("RUN") if "uv sync" in r):
        assert run.split("--package ")[1].split()[0] == _package_name("cli")
    copied = " ".join(df.all("COPY"))
    for member in _workspace_members():
        assert f"{member}/src" in copied
    assert "deploy/init_secrets.py /app/deploy/init_secrets.py" in copied


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "var/keys/cef-dev.pem",
        "services/x/var/a.db",
        ".env",
        "services/tokeniser/tests/test_x.py",
        "deploy/README.md",
    ):
        assert _dockerignored(path), path
    assert not _dockerignored("deploy/init_secrets.py")
    assert not _dockerignored("services/common/src/cef_common/app.py")


# --- the keys-init script ------------------------------------------------------------------------


def test_init_secrets_creates_everything_once(tmp_path: Path) -> None:
    from cef_common.keys import jwks_path_for, load_signing_key

    script = load_script("init_secrets")
    root = tmp_path / "secrets"
    assert script.main(["--root", str(root)]) == 0
    first = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    for name in SERVICES:
        key = load_signing_key(root / name / f"{name}.pem", create=False)
        assert json.loads(jwks_path_for(root / name / f"{name}.pem").read_text()) == key.jwks()
        assert (root / name / f"{name}.pem").stat().st_mode & 0o077 == 0
        assert (root / name / "pgpass").stat().st_mode & 0o077 == 0
    master = (root / "tokeniser" / script.MASTER_KEY_NAME).read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", master)
    assert (root / "tokeniser" / script.MASTER_KEY_NAME).stat().st_mode & 0o077 == 0
    for sdb in script.DATABASES:
        host, port, database, role, password = (root / sdb.service / "pgpass").read_text().strip().split(":")
        assert (host, port, database, role) == ("postgres", "5432", sdb.database, sdb.app_role)
        assert password == (root / "db-init" / f"{sdb.app_role}.password").read_text().strip()
        assert f"postgres:5432:{sdb.database}:{sdb.owner_role}:" in (root / "migrate" / "pgpass").read_text()
    assert (root / "db-init" / "postgres.password").exists()
    assert not list((root / "db-init").glob("*.pem"))
    # Run again: nothing is replaced.
    assert script.main(["--root", str(root)]) == 0
    assert {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()} == first


def test_pgpass_escapes_separators() -> None:
    script = load_script("init_secrets")
    assert script._pgpass_line("h", 5432, "d", "r", "a:b\\c") == "h:5432:d:r:a\\:b\\\\c"


# --- PostgreSQL: the init script, the migration one-shots, and what each role may do ------------------


@pytest.fixture
def initialised_postgres(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """deploy/postgres/init.sh run on the test server with names of its own, and dropped after."""
    import psycopg

    admin = os.environ.get("CEF_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        psycopg.connect(admin, connect_timeout=3).close()
    except psycopg.Error:
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL server at {admin}")
        pytest.skip(f"no PostgreSQL server at {admin}")
    suffix = f"_t{uuid.uuid4().hex[:8]}"
    script = load_script("init_secrets")
    secrets_root = tmp_path / "secrets"
    script.init_secrets(secrets_root, service_uid=None, postgres_uid=None)
    url = make_url(admin)
    env = {
        **os.environ,
        "CEF_DB_SECRETS_DIR": str(secrets_root / "db-init"),
        "CEF_DB_NAME_SUFFIX": suffix,
        "PGHOST": url.host or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
    }
    if url.password:
        env["PGPASSWORD"] = url.password
    result = subprocess.run(
        ["bash", str(ROOT / "deploy/postgres/init.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    try:
        assert result.returncode == 0, result.stderr
        yield suffix, secrets_root
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for sdb in script.DATABASES:
                conn.execute(f'DROP DATABASE IF EXISTS "{sdb.database}{suffix}" WITH (FORCE)')  # type: ignore[arg-type]
                for role in (sdb.owner_role, sdb.app_role):
                    conn.execute(f'DROP ROLE IF EXISTS "{role}{suffix}"')  # type: ignore[arg-type]


def _server_url(compose_url: str, suffix: str, passfile: Path) -> str:
    """A compose database URL pointed at the test server, with the test's names and passfile."""
    admin = make_url(os.environ.get("CEF_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    url = make_url(compose_url)
    return url.set(
        host=admin.host,
        port=admin.port or 5432,
        database=f"{url.database}{suffix}",
        username=f"{url.username}{suffix}",
        query={"passfile": str(passfile)},
    ).render_as_string(hide_password=False)


@pytest.mark.postgres
def test_init_sql_migrations_and_role_privileges(
    compose: dict[str, Any], initialised_postgres: tuple[str, Path], tmp_path: Path
) -> None:
    import psycopg

    suffix, secrets_root = initialised_postgres

    def attempt(url: str, sql: str) -> str:
        try:
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute(sql)  # type: ignore[arg-type]
            return "ok"
        except psycopg.errors.InsufficientPrivilege:
            return "denied"

    # The migration one-shots, as compose runs them: `cef migrate --service <name>` (in process:
    # the same command, without paying for three interpreters).
    from typer.testing import CliRunner

    from cef_cli.main import app as cef

    for name, service in SERVICES.items():
        one_shot = compose["services"][service.migrate]
        variable = f"{service.prefix}DATABASE_URL"
        url = _server_url(environment(one_shot)[variable], suffix, secrets_root / "migrate" / "pgpass")
        assert one_shot["command"][0] == "cef"
        result = CliRunner().invoke(cef, one_shot["command"][1:], env={variable: url})
        assert result.exit_code == 0, f"{service.migrate}: {result.output}"
        assert f"{name}: migrated to head" in result.output

    def app_url(name: str) -> str:
        variable = f"{SERVICES[name].prefix}DATABASE_URL"
        compose_url = environment(compose["services"][name])[variable]
        return _server_url(compose_url, suffix, secrets_root / name / "pgpass")

    audit, api, web = app_url("audit"), app_url("cef-api"), app_url("web")
    # The audit service's role appends and reads; it can change nothing.
    assert attempt(audit, "SELECT count(*) FROM audit_events") == "ok"
    assert attempt(audit, "SELECT version_num FROM alembic_version") == "ok"
    for sql in (
        "UPDATE audit_events SET action = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "DELETE FROM audit_checkpoints",
        "DELETE FROM audit_head",
        "CREATE TABLE t (a int)",
        "DROP TABLE audit_events",
    ):
        assert attempt(audit, sql) == "denied", sql
    # The read-write services use their tables but change no schema.
    assert attempt(api, "SELECT version_num FROM alembic_version") == "ok"
    assert attempt(api, "CREATE TEMP TABLE scratch (a int)") == "ok"
    assert attempt(api, "CREATE TABLE t (a int)") == "denied"
    assert attempt(api, "DROP TABLE alembic_version") == "denied"
    # The web app keeps, refreshes and ends sessions; nothing else.
    assert attempt(web, "SELECT count(*) FROM web_session") == "ok"
    assert attempt(web, "UPDATE web_session SET last_seen_at = now()") == "ok"
    assert attempt(web, "DELETE FROM web_session WHERE expires_at <= now()") == "ok"
    assert attempt(web, "SELECT count(*) FROM audit_outbox") == "ok"
    assert attempt(web, "CREATE TABLE t (a int)") == "denied"
    assert attempt(web, "DROP TABLE web_session") == "denied"
    assert attempt(web, "TRUNCATE web_session") == "denied"
    # And nobody reaches another service's database.
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(api.replace("+psycopg", "").replace(f"/cef_api{suffix}", f"/cef_audit{suffix}"))
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(web.replace("+psycopg", "").replace(f"/cef_web{suffix}", f"/cef_api{suffix}"))


def test_the_configuration_document_matches_the_settings() -> None:
    script = load_script("settings_table")
    document = script.DOC.read_text()
    assert script.replace_in(document, script.render()) == document, (
        "docs/configuration.md is out of date: run `uv run python deploy/settings_table.py --write`"
    )
    for name, service in SERVICES.items():
        for field in settings_class(service).model_fields:
            assert re.search(rf"[_>]{field.upper()}`", document), f"{name}.{field} is not documented"
