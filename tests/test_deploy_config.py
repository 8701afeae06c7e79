"""The Dockerfile, .dockerignore and docker-compose.yml checked against the code.

No container engine runs where the tests run, so these files are parsed and held to what
the code really accepts: every variable compose sets is a setting with a valid value, every
command is a real CLI command with real options, ports and health checks agree, and the
image's layout runs migrations. The health check commands themselves are run against live
servers.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from pydantic import SecretStr, TypeAdapter
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings
from tests.clirun import SETTINGS_ENV, clean_env
from tests.conftest import Service, Simulator
from tests.support import free_socket

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
RELAY_SERVICES = {"migrate", "sandbox", "api", "worker"}


# ---- compose -----------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `$$`."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        current = env.get(name)
        if operator is None:
            return current or ""
        if operator == ":-":
            return current or argument
        if operator == "-":
            return argument if current is None else current
        if operator == ":+":
            return argument if current else ""
        if operator == "+":
            return "" if current is None else argument
        if not current:
            raise AssertionError(f"compose needs {name}: {argument}")
        return current

    return _VARIABLE.sub(substitute, value)


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as compose sees it with `env` as the host environment and .env."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    interpolated: dict[str, Any] = interpolate(raw, env or {})
    return interpolated


def services(env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose(env)["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def settings_of(service: dict[str, Any]) -> Settings:
    """The Settings a container of this service would run with (no `.env` in the image)."""
    values = {key.lower(): value for key, value in environment(service).items()}
    return Settings.model_validate(values)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def container_port(mapping: str) -> int:
    return int(str(mapping).rsplit(":", 1)[1].split("/")[0])


def published_port(mapping: str) -> int:
    return int(str(mapping).split(":")[-2])


def healthcheck_command(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert isinstance(test, list), "a health check in exec form"
    assert test[0] in {"CMD", "CMD-SHELL"}
    return list(test)


# ---- Dockerfile --------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def one(self, keyword: str) -> str:
        [args] = self.all(keyword)
        return args


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            for name, default in args.items():
                rest = rest.replace(f"${{{name}}}", default)
            parts = rest.split()
            assert parts[0] != "--platform", "no pinned platform"
            stage_name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], stage_name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), "exec form: a JSON array"
    return [str(item) for item in value]


def healthcheck_cmd(healthcheck: str) -> list[str]:
    """The command of `HEALTHCHECK [options] CMD [...]`."""
    _, _, command = healthcheck.partition("CMD ")
    return exec_form(command.strip())


# ---- the CLI ---------------------------------------------------------------------


def parse_cli(argv: list[str]) -> Any:
    """Parse `poyo-relay ARGV` as the CLI would (names, types, ranges), without running it."""
    assert argv[0] == "poyo-relay", argv
    group: Any = typer.main.get_command(cli)
    parent = group.context_class(group, info_name="poyo-relay")
    command = group.get_command(parent, argv[1])
    assert command is not None, f"no CLI command {argv[1]!r}"
    return command.make_context(argv[1], list(argv[2:]), parent=parent)


def check_cli_help(argv: list[str]) -> None:
    result = CliRunner().invoke(cli, [argv[1], "--help"])
    assert result.exit_code == 0, result.output


# ---- tests -------------------------------------------------------------------------


def test_compose_services_and_their_order() -> None:
    found = services()
    assert set(found) == {"postgres", *RELAY_SERVICES}
    images = {found[name]["image"] for name in RELAY_SERVICES}
    assert len(images) == 1, "one image for every role"
    for name in RELAY_SERVICES:
        assert found[name]["build"]["context"] == "."
    assert found["migrate"]["restart"] == "no"

    def condition(service: str, dependency: str) -> str:
        return str(found[service]["depends_on"][dependency]["condition"])

    assert condition("migrate", "postgres") == "service_healthy"
    assert condition("api", "migrate") == "service_completed_successfully"
    assert condition("worker", "migrate") == "service_completed_successfully"
    assert condition("api", "sandbox") == "service_healthy"
    assert found["sandbox"]["profiles"] == ["sandbox"], "the simulator runs only when asked"
    for name, service in found.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in found, (name, dependency)
            if rule["condition"] == "service_healthy":
                check = found[dependency].get("healthcheck") or {}
                assert check, f"{dependency} needs a health check"
                assert not check.get("disable"), f"{dependency} needs a health check"

    postgres = found["postgres"]
    assert postgres["image"].startswith("postgres:")
    [volume] = postgres["volumes"]
    volume_name, mount = volume.split(":", 1)
    assert mount == "/var/lib/postgresql/data"
    assert volume_name in compose()["volumes"]
    assert "pg_isready" in " ".join(healthcheck_command(postgres))
    # a one-shot service must not inherit the image's /healthz check
    assert found["migrate"]["healthcheck"] == {"disable": True}
    # the worker has no API: its check asks its metrics server, on the port it serves
    worker_port = option(found["worker"]["command"], "--metrics-port")
    assert worker_port in [str(port) for port in found["worker"]["expose"]]
    assert f"http://127.0.0.1:{worker_port}/metrics" in " ".join(
        healthcheck_command(found["worker"])
    )


def test_compose_sets_only_real_settings_with_valid_values() -> None:
    found = services()
    for name in RELAY_SERVICES:
        unknown = set(environment(found[name])) - SETTINGS_ENV
        assert not unknown, f"{name} sets variables Settings does not know: {unknown}"
        settings_of(found[name])  # every value is valid

    api = settings_of(found["api"])
    assert api.run_worker is False, "the worker runs in its own service"
    # api and worker must agree on everything else: database, provider, callback URLs
    api_env = environment(found["api"])
    assert api_env.pop("RUN_WORKER") == "false"
    assert api_env == environment(found["worker"])
    assert environment(found["migrate"])["DATABASE_URL"] == api_env["DATABASE_URL"]

    # sandbox mode by default: the provider is the sandbox service
    assert api.sandbox_mode
    sandbox_command = found["sandbox"]["command"]
    sandbox = urlsplit(api.provider_base_url)
    assert (sandbox.hostname, sandbox.port) == ("sandbox", int(option(sandbox_command, "--port")))
    public = urlsplit(api.public_base_url)
    assert public.hostname == "api"
    assert public.port == int(option(found["api"]["command"], "--port"))
    database = urlsplit(api.database_url)
    assert api.database_url.startswith("postgresql+asyncpg://")
    assert (database.hostname, database.port) == ("postgres", 5432)
    postgres_env = environment(found["postgres"])
    assert database.username == postgres_env["POSTGRES_USER"]
    assert database.password == postgres_env["POSTGRES_PASSWORD"]
    assert database.path == "/" + postgres_env["POSTGRES_DB"]
    assert api.log_format == "json"


def started(found: dict[str, dict[str, Any]], profiles: set[str]) -> set[str]:
    """The services `docker compose [--profile P]... up` starts; each one's dependencies
    must start too unless they are marked `required: false` (compose then skips them)."""
    running = {
        name
        for name, service in found.items()
        if not service.get("profiles") or profiles & set(service["profiles"])
    }
    for name in running:
        for dependency, rule in (found[name].get("depends_on") or {}).items():
            assert dependency in running or rule.get("required") is False, (name, dependency)
    return running


def test_the_sandbox_profile_starts_the_simulator_and_only_it() -> None:
    sandbox_mode = services()
    assert started(sandbox_mode, {"sandbox"}) == {"postgres", *RELAY_SERVICES}
    assert settings_of(sandbox_mode["api"]).sandbox_mode

    real = services({"POYO_API_KEY": "pk-live-0123456789"})
    assert started(real, set()) == {"postgres", "migrate", "api", "worker"}
    for name in ("api", "worker"):
        assert not settings_of(real[name]).sandbox_mode
        # api and worker wait for the simulator only when it runs
        assert real[name]["depends_on"]["sandbox"]["required"] is False


def test_two_variables_in_dotenv_switch_to_the_real_poyo() -> None:
    dotenv = {"POYO_API_KEY": "pk-live-0123456789", "PUBLIC_BASE_URL": "https://relay.example.com"}
    found = services(dotenv)
    for name in ("api", "worker"):
        settings = settings_of(found[name])
        assert not settings.sandbox_mode
        assert settings.provider_base_url == "https://api.poyo.ai"
        assert settings.public_base_url == "https://relay.example.com"
        assert settings.poyo_api_key.get_secret_value() == "pk-live-0123456789"
    # and the provider key never reaches the simulator's container
    assert "POYO_API_KEY" not in environment(found["sandbox"])


def test_every_setting_is_documented_in_env_example() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    documented = {line.split("=", 1)[0] for line in lines if re.match(r"^[A-Z][A-Z0-9_]*=", line)}
    assert SETTINGS_ENV - documented == set(), "missing from .env.example"
    assert documented - SETTINGS_ENV == set(), ".env.example names unknown variables"


def test_compose_and_dockerfile_commands_are_real_cli_commands() -> None:
    found = services()
    commands = {name: found[name]["command"] for name in RELAY_SERVICES}
    _, stages = dockerfile()
    commands["Dockerfile CMD"] = exec_form(stages[-1].one("CMD"))
    assert commands["Dockerfile CMD"] == commands["api"], "the image runs the API by default"
    assert [commands[name][1] for name in ("migrate", "sandbox", "api", "worker")] == [
        "migrate",
        "sandbox",
        "serve",
        "worker",
    ]
    for name, argv in commands.items():
        assert all(isinstance(arg, str) for arg in argv), (name, argv)
        check_cli_help(argv)
        context = parse_cli(argv)  # raises on an unknown option or a bad value
        if "--host" in argv:
            assert context.params["host"] == "0.0.0.0", f"{name} must listen beyond loopback"
    sandbox = parse_cli(commands["sandbox"]).params
    # Output URLs name the address the worker downloads (archives) them from: SANDBOX_URL,
    # which sandbox mode trusts; clients open poyo-relay's own output URL instead.
    assert sandbox["public_url"] == found["worker"]["environment"]["SANDBOX_URL"]


def test_ports_agree() -> None:
    found = services()
    _, stages = dockerfile()
    final = stages[-1]
    api_port = int(option(found["api"]["command"], "--port"))
    [api_mapping] = found["api"]["ports"]
    assert container_port(api_mapping) == api_port
    assert final.all("EXPOSE") == [str(api_port)]
    assert f"http://127.0.0.1:{api_port}/healthz" in " ".join(healthcheck_command(found["api"]))
    assert f"http://127.0.0.1:{api_port}/healthz" in " ".join(
        healthcheck_cmd(final.one("HEALTHCHECK"))
    )

    sandbox_port = int(option(found["sandbox"]["command"], "--port"))
    [sandbox_mapping] = found["sandbox"]["ports"]
    assert container_port(sandbox_mapping) == sandbox_port
    assert str(sandbox_mapping).startswith("127.0.0.1:"), "the simulator is for this host only"
    assert f"http://127.0.0.1:{sandbox_port}/" in " ".join(healthcheck_command(found["sandbox"]))
    moved = services({"SANDBOX_PORT": "18100", "API_PORT": "18000"})
    assert published_port(moved["sandbox"]["ports"][0]) == 18100
    assert published_port(moved["api"]["ports"][0]) == 18000
    assert container_port(moved["api"]["ports"][0]) == api_port


def test_dockerfile_is_multi_stage_slim_and_unprivileged() -> None:
    _, stages = dockerfile()
    assert len(stages) >= 2, "multi-stage"
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    for stage in (builder, final):
        assert re.match(r"^python:3\.11-slim(-[a-z]+)?$", stage.base), stage.base

    builder_runs = " ".join(builder.all("RUN")) + " ".join(builder.all("ENV"))
    assert "pip wheel" in builder_runs or "pip install" in builder_runs
    assert "--no-cache-dir" in builder_runs or "PIP_NO_CACHE_DIR=1" in builder_runs

    final_runs = " ".join(final.all("RUN"))
    for tool in ("pip install", "apt-get install", "gcc", "build-essential", "curl", "wget"):
        assert tool not in final_runs, f"{tool!r} in the final stage"
    copies = final.all("COPY")
    assert any(c.startswith("--from=builder") for c in copies), "the venv comes from the builder"
    assert "--from=builder /opt/venv /opt/venv" in copies

    [user] = final.all("USER")
    assert user.split(":")[0] not in {"root", "0"}, "runs as a non-root user"
    user_id = user.split(":")[0]
    assert user_id in " ".join(final.all("RUN")), "the user is created in the image"

    [healthcheck] = final.all("HEALTHCHECK")
    command = healthcheck_cmd(healthcheck)
    assert command[:2] == ["python", "-c"], "python's urllib: no curl in the image"
    assert "urllib.request" in command[2]
    assert "/healthz" in command[2]

    workdir = final.one("WORKDIR")
    assert workdir == "/app"
    # alembic.ini and migrations/ land in the working directory, where `migrate` looks first
    assert "alembic.ini ./" in copies
    assert "migrations ./migrations" in copies
    for line in final.all("ENV"):
        for name in re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", line):
            if not name.startswith(("PYTHON", "PATH")):
                assert name in SETTINGS_ENV, f"ENV {name} is not a setting"


def dockerignore_excludes(path: str) -> bool:
    """Docker's rules: the last pattern matching the path or one of its parents decides."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif pattern.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif pattern[index] == "*":
                regex, index = regex + "[^/]*", index + 1
            elif pattern[index] == "?":
                regex, index = regex + "[^/]", index + 1
            elif pattern[index] == "[":
                end = pattern.index("]", index)
                regex, index = regex + pattern[index : end + 1], end + 1
            else:
                regex, index = regex + re.escape(pattern[index]), index + 1
        rules.append((re.compile(regex + "$"), negated))
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for rule, negated in rules:
        if any(rule.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_the_build_context_small() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        "poyo_relay.db",
        "poyo_relay.db-wal",
        "tests/test_cli.py",
        "bench/run.py",
        "app/__pycache__/cli.cpython-311.pyc",
        ".mypy_cache/3.11/cache.db",
        "poyo_relay.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(path), f"{path} would be sent to the builder"
    _, stages = dockerfile()
    sources = []
    for stage in stages:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            sources += shlex.split(copy)[:-1]
    assert sources, "the Dockerfile copies files from the context"
    for source in sources:
        matches = list(ROOT.glob(source)) if "*" in source else [ROOT / source]
        for match in matches:
            assert match.exists(), f"COPY {source}: not in the repository"
            files = [match] if match.is_file() else [f for f in match.rglob("*") if f.is_file()]
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if "__pycache__" in relative:
                    continue
                assert not dockerignore_excludes(relative), f"{relative} is needed but ignored"


def test_the_image_layout_migrates_from_its_workdir(tmp_path: Path) -> None:
    """The package installed (not a checkout), alembic.ini and migrations/ in WORKDIR, as
    the Dockerfile lays them out: `poyo-relay migrate` must find them there."""
    import subprocess

    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "app", site / "app", ignore=shutil.ignore_patterns("__pycache__"))
    workdir = tmp_path / "app-workdir"
    workdir.mkdir()
    _, stages = dockerfile()
    for copy in stages[-1].all("COPY"):
        if copy.startswith("--from="):
            continue
        source, destination = shlex.split(copy)
        target = workdir / destination
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / source, target)
    database = tmp_path / "data.db"
    env = clean_env(PYTHONPATH=str(site), DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    entry_point = "import sys; from app.cli import main; sys.argv[0] = 'poyo-relay'; main()"

    where = subprocess.run(
        [sys.executable, "-c", "import app; print(app.__file__)"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(site), "the copy is imported, not the checkout"

    result = subprocess.run(
        [sys.executable, "-c", entry_point, "migrate"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"migrations in {workdir}" in result.stdout.replace("\n", "")

    async def tables() -> set[str]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda sync: sa_inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    assert {"jobs", "job_events", "api_keys", "alembic_version"} <= asyncio.run(tables())


async def run_healthcheck(command: list[str], port: int) -> int:
    """A health check command with its address pointed at `port` on this host."""
    if command[0] in {"CMD", "CMD-SHELL"}:
        command = command[1:]
    assert command[:2] == ["python", "-c"]
    code = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", command[2])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 60)


async def test_health_checks_pass_on_live_servers_and_fail_without_them(
    service: Service, simulator: Simulator
) -> None:
    found = services()
    _, stages = dockerfile()
    image_check = healthcheck_cmd(stages[-1].one("HEALTHCHECK"))
    api_port = service.server.port
    simulator_port = simulator.server.port
    assert await run_healthcheck(image_check, api_port) == 0
    assert await run_healthcheck(healthcheck_command(found["api"]), api_port) == 0
    assert await run_healthcheck(healthcheck_command(found["sandbox"]), simulator_port) == 0

    closed = free_socket()  # bound, not listening: nothing answers there
    try:
        port = closed.getsockname()[1]
        assert await run_healthcheck(image_check, port) != 0
        assert await run_healthcheck(healthcheck_command(found["sandbox"]), port) != 0
    finally:
        closed.close()
    # the simulator has no /healthz: the image's check must not be pointed at it
    assert await run_healthcheck(image_check, simulator_port) != 0


@pytest.mark.parametrize("name", sorted(RELAY_SERVICES))
def test_each_service_command_shows_help(name: str) -> None:
    argv = services()[name]["command"]
    result = CliRunner().invoke(cli, [*argv[1:2], "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


# ---- every default, written once: Settings; the README, .env.example and compose agree --

README = ROOT / "README.md"
# Compose runs the services in their own network, so where the API is reached differs.
COMPOSE_OWN_DEFAULTS = {"PUBLIC_BASE_URL"}


def as_setting(name: str, text: str) -> object:
    """`text` as the value the setting `name` would hold (the way Settings parses it)."""
    annotation = Settings.model_fields[name.lower()].annotation
    assert annotation is not None
    value = TypeAdapter(annotation).validate_python(text)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def setting_default(name: str) -> object:
    default = Settings.model_fields[name.lower()].default
    return default.get_secret_value() if isinstance(default, SecretStr) else default


def readme_defaults() -> dict[str, str]:
    """The README's configuration table: each variable and the default it states."""
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        values = [
            "" if token == "empty" else token.strip("`")
            for token in re.findall(r"`[^`]*`|\bempty\b", cells[1])
        ]
        if len(values) == 1:
            values *= len(names)
        assert len(values) == len(names), f"README: one default per variable in {line!r}"
        found |= dict(zip(names, values, strict=True))
    return found


def test_readme_table_lists_every_setting_with_its_real_default() -> None:
    stated = readme_defaults()
    assert SETTINGS_ENV - stated.keys() == set(), "missing from the README's table"
    assert stated.keys() - SETTINGS_ENV == set(), "the README's table names unknown variables"
    wrong = {
        name: (text, setting_default(name))
        for name, text in stated.items()
        if as_setting(name, text) != setting_default(name)
    }
    assert wrong == {}, "README default (stated, real)"


def test_env_example_values_are_the_defaults() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if re.match(r"^[A-Z][A-Z0-9_]*=", line)]
    wrong = {
        name: (text, setting_default(name))
        for name, text in pairs
        if as_setting(name, text) != setting_default(name)
    }
    assert wrong == {}, ".env.example value (stated, real default)"


def test_compose_fallbacks_are_the_defaults() -> None:
    fallbacks = re.findall(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}", COMPOSE_FILE.read_text())
    settings_fallbacks = [(n, v) for n, v in fallbacks if n in SETTINGS_ENV]
    assert len(settings_fallbacks) >= 5, "compose's ${VAR:-default} were found"
    wrong = {
        name: (text, setting_default(name))
        for name, text in settings_fallbacks
        if name not in COMPOSE_OWN_DEFAULTS and as_setting(name, text) != setting_default(name)
    }
    assert wrong == {}, "compose fallback (stated, real default)"


def test_make_without_the_venv_module_says_which_package_to_install(tmp_path: Path) -> None:
    # Debian's python3 without python3-venv: `import ensurepip` fails.
    shadow = tmp_path / "shadow" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ensurepip')\n")
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-C", str(ROOT), "install", f"PYTHON={sys.executable}", f"VENV={venv}"],
        env=clean_env(PYTHONPATH=str(shadow.parent)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "sudo apt-get install python3-venv" in result.stderr
    assert not venv.exists(), "nothing half-made"
