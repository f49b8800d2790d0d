"""The image and the manifests agree: the Dockerfile builds what every Kubernetes workload runs.

Pure and fast: reads the Dockerfile, .dockerignore, pyproject.toml and the manifests, and imports the modules
they name (no Docker, no cluster). Nothing here lists the services or modules: the names come from the
Dockerfile's entry-point table and the manifests, so moving a module means editing that table only, and
this test says whether the result still resolves.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
KUBERNETES = ROOT / "infra" / "kubernetes"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
NON_ROOT_UID = 10001  # runAsUser in every manifest


# -- the Dockerfile, parsed just enough ----------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    lines: list[str]


def _instructions(text: str) -> list[str]:
    """Instructions with continuation lines joined and heredoc bodies (<<EOF ... EOF) left out."""
    out: list[str] = []
    pending = ""
    heredoc_end = None
    for line in text.splitlines():
        if heredoc_end:
            heredoc_end = None if line == heredoc_end else heredoc_end
            continue
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            out.append(pending.strip())
            if m := re.search(r"<<-?'?(\w+)'?", pending):
                heredoc_end = m[1]
            pending = ""
    return out


def _global_args(text: str) -> dict[str, str]:
    args = {}
    for line in _instructions(text):
        if re.match(r"(?i)^FROM\s", line):
            break
        if m := re.match(r"(?i)^ARG\s+(\w+)=(\S+)", line):
            args[m[1]] = m[2]
    return args


def _stages() -> list[Stage]:
    text = DOCKERFILE.read_text()
    args = _global_args(text)
    stages: list[Stage] = []
    for line in _instructions(text):
        if m := re.match(r"(?i)^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line):
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda v: args.get(v[1] or v[2], v[0]), m[1])
            stages.append(Stage(base, m[2], []))
        elif stages:
            stages[-1].lines.append(line)
    return stages


def _entrypoint_script() -> tuple[str, str]:
    """(install path, body) of the script the Dockerfile writes with a heredoc and uses as ENTRYPOINT."""
    text = DOCKERFILE.read_text()
    (entrypoint,) = [
        json.loads(line.split(None, 1)[1]) for line in _instructions(text) if line.startswith("ENTRYPOINT")
    ]
    for m in re.finditer(r"^COPY [^\n]*<<'?(\w+)'?\s+(\S+)\n(.*?)^\1$", text, flags=re.M | re.S):
        if Path(m[2]).name == Path(entrypoint[0]).name:
            return m[2], m[3]
    raise AssertionError(f"no heredoc in the Dockerfile writes the ENTRYPOINT {entrypoint}")


def _service_table() -> dict[str, list[str]]:
    """The entry-point script's case table: service name -> argv (without the pass-through "$@")."""
    _, body = _entrypoint_script()
    table = {}
    for m in re.finditer(r"^\s*([a-z][a-z0-9-]*)\)\s+exec\s+(.+?)\s*;;", body, flags=re.M):
        table[m[1]] = [a for a in shlex.split(m[2]) if a != "$@"]
    return table


SERVICES = _service_table()


# -- the manifests -------------------------------------------------------------------------------------


def _load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization(overlay: str) -> dict:
    (doc,) = _load(KUBERNETES / overlay / "kustomization.yaml")
    return doc


def _pod_spec(obj: dict) -> dict:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def _containers() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(KUBERNETES.rglob("*.yaml")):
        for obj in _load(path):
            if obj.get("kind") in WORKLOAD_KINDS:
                pod = _pod_spec(obj)
                for c in pod.get("initContainers", []) + pod["containers"]:
                    found.append((f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}", c))
    return found


CONTAINERS = _containers()
IMAGE = _kustomization("base")["images"][0]["name"]


def _argv(container: dict) -> list[str]:
    """What the container runs: its command, or the image's ENTRYPOINT resolving a service name."""
    if "command" in container:
        return list(container["command"]) + list(container.get("args", []))
    args = list(container.get("args", []))
    assert args, "a container without command or args would run the image's default CMD"
    return SERVICES[args[0]] + args[1:] if args[0] in SERVICES else args


# -- resolving an argv to code that exists -------------------------------------------------------------


def _dependency_names() -> set[str]:
    return {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower() for d in PYPROJECT["project"]["dependencies"]}


def _resolve(target: str):
    module, _, attribute = target.partition(":")
    obj = importlib.import_module(module)
    for part in attribute.split(".") if attribute else []:
        assert hasattr(obj, part), f"{module} has no attribute {attribute}"
        obj = getattr(obj, part)
    return obj


def _typer_commands(app) -> set[str]:
    names = {c.name or c.callback.__name__.lower().replace("_", "-") for c in app.registered_commands}
    return names | {g.name for g in app.registered_groups}


def _check_runnable(argv: list[str]) -> None:
    program, rest = argv[0], argv[1:]
    scripts = PYPROJECT["project"].get("scripts", {})
    if program in {"python", "python3"}:
        assert rest[:1] == ["-m"], f"python runs a module here, not {rest}"
        module = rest[1]
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"python -m {module}: no such module"
        if spec.submodule_search_locations is not None:
            assert importlib.util.find_spec(f"{module}.__main__"), f"python -m {module}: the package has no __main__"
        else:
            assert "__main__" in Path(spec.origin).read_text(), f"python -m {module}: the module has no main block"
    elif program == "uvicorn":
        assert "uvicorn" in _dependency_names(), "uvicorn is not a dependency in pyproject.toml"
        (target,) = [a for a in rest if ":" in a and not a.startswith("-")]
        app = _resolve(target)
        if "--factory" in rest:
            assert callable(app), f"{target} is not a factory"
    elif program in scripts:
        entry = _resolve(scripts[program])
        subcommand = next((a for a in rest if not a.startswith("-")), None)
        if subcommand and hasattr(entry, "registered_commands"):
            assert subcommand in _typer_commands(entry), f"`{program} {subcommand}`: no such command"
    else:
        raise AssertionError(f"{program}: neither python -m, uvicorn nor a console script of pyproject.toml")


# -- the Dockerfile ------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_python_311_slim():
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        if stage.base not in {s.name for s in stages}:
            assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*(@sha256:[0-9a-f]{64})?", stage.base), stage.base


def test_the_runtime_stage_runs_as_the_manifests_non_root_user():
    final = _stages()[-1]
    users = [line.split(None, 1)[1] for line in final.lines if line.startswith("USER ")]
    assert users, "the runtime stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid not in {"root", "0"}
    assert uid == str(NON_ROOT_UID), "Kubernetes' runAsNonRoot can only verify a numeric user; the manifests use 10001"


def test_dependencies_are_pinned_by_constraints_and_the_runtime_gets_no_test_extra():
    stages = _stages()
    installs = [line for s in stages for line in s.lines if "pip install" in line or "pip wheel" in line]
    assert any(re.search(r"(--constraint|-c)\s+constraints\.txt", line) for line in installs)
    assert not any("[test]" in line for line in installs)
    assert not any("pip install" in line for line in stages[-1].lines), "the runtime stage copies, never installs"


def test_entrypoint_table_is_what_the_image_runs():
    path, _ = _entrypoint_script()
    assert path.startswith("/opt/venv/bin/"), "the script must be in the venv the runtime stage copies"
    assert SERVICES, "no `name) exec ...` lines in the entry-point script"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_entry_point_of_the_image_exists(service: str):
    _check_runnable(SERVICES[service])


def test_dockerignore_keeps_what_the_build_needs_and_drops_the_rest():
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(
            fnmatch.fnmatch(p, pat.removeprefix("**/")) or fnmatch.fnmatch(p, pat)
            for pat in patterns
            if not pat.startswith("!")
            for p in prefixes
        )

    includes = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [
        p.parent.relative_to(ROOT).as_posix()
        for p in ROOT.glob("*/__init__.py")
        if any(fnmatch.fnmatch(p.parent.name, pattern) for pattern in includes)
    ]
    assert packages
    for needed in ["pyproject.toml", "constraints.txt", PYPROJECT["project"]["readme"], *packages]:
        assert not ignored(needed), f".dockerignore drops {needed}, which the build needs"
    for dropped in [".git", ".venv", "tests", "bench", "command_api/__pycache__"]:
        assert ignored(dropped), f".dockerignore should drop {dropped}"


# -- the manifests against the image -------------------------------------------------------------------


def test_the_image_name_is_the_one_the_dockerfile_labels():
    assert re.search(rf'org\.opencontainers\.image\.title="{re.escape(IMAGE)}"', DOCKERFILE.read_text())
    production = {i["name"]: i for i in _kustomization("overlays/production")["images"]}
    assert production[IMAGE]["newName"].endswith(f"/{IMAGE}")


@pytest.mark.parametrize("where, container", CONTAINERS, ids=[w for w, _ in CONTAINERS])
def test_every_container_runs_the_image(where: str, container: dict):
    assert container["image"] == IMAGE, f"{where} runs {container['image']}, not the image the Dockerfile builds"


@pytest.mark.parametrize("where, container", CONTAINERS, ids=[w for w, _ in CONTAINERS])
def test_every_container_runs_something_that_exists(where: str, container: dict):
    _check_runnable(_argv(container))


@pytest.mark.parametrize("where, container", CONTAINERS, ids=[w for w, _ in CONTAINERS])
def test_containers_listen_where_their_process_does(where: str, container: dict):
    argv = _argv(container)
    if "--port" in argv:
        assert {p["containerPort"] for p in container.get("ports", [])} == {int(argv[argv.index("--port") + 1])}


def test_migration_job_runs_ogp_migrate():
    jobs = [c for where, c in CONTAINERS if where.startswith("Job/ogp-migrate/")]
    (container,) = jobs
    assert _argv(container)[:2] == ["ogp", "migrate"]


def test_checks_catch_a_missing_module():
    with pytest.raises(AssertionError):
        _check_runnable(["python", "-m", "projections.no_such_module"])
    with pytest.raises((AssertionError, ImportError)):
        _check_runnable(["uvicorn", "command_api.app:no_such_factory", "--factory"])
    with pytest.raises(AssertionError):
        _check_runnable(["ogp", "no-such-command"])


def _runtime_distributions() -> set[str]:
    """The runtime dependencies of pyproject.toml and everything they require in turn, with the extras asked for."""
    seen: set[tuple[str, str]] = set()
    todo = [Requirement(d) for d in PYPROJECT["project"]["dependencies"]]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        wanted = {(name, extra) for extra in ("", *requirement.extras)} - seen
        if not wanted:
            continue
        seen |= wanted
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in map(Requirement, requires):
            if text.marker is None or any(text.marker.evaluate({"extra": extra}) for _, extra in wanted):
                todo.append(text)
    return {name for name, _ in seen}


def test_every_library_the_shipped_code_imports_is_a_runtime_dependency():
    # The image installs the runtime dependencies only: a library that came with the [test] extra here would be
    # missing there, and the service importing it would not start.
    includes = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    ours = {p.parent.name for p in ROOT.glob("*/__init__.py")} | {"tests", "bench"}
    provided = importlib.metadata.packages_distributions()
    runtime = _runtime_distributions()
    missing = set()
    for package in (p.parent for p in ROOT.glob("*/__init__.py")):
        if not any(fnmatch.fnmatch(package.name, pattern) for pattern in includes):
            continue
        for path in package.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in (name.split(".")[0] for name in names):
                    if top in sys.stdlib_module_names or top in ours:
                        continue
                    distributions = {canonicalize_name(d) for d in provided.get(top, [top])}
                    if not distributions & runtime:
                        missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported by the shipped code, not a runtime dependency: {sorted(missing)}"
