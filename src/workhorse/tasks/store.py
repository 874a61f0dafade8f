"""Reading task files (with errors that point at the line) and the task store.

Tasks live under `$WORKHORSE_HOME/tasks/<name>/v<version>/`: `task.yaml` and any trained parts
(`head.npz`, `oos.npz`, and `adapter.gguf`: a LoRA adapter the version's model runs with). The
shipped examples in `workhorse/tasks/examples/` are found by name too.

Which version answers is the task's active version: the one named in `<name>/active` once a
version has been promoted (a trained candidate that failed its gate stays a version, unused), else
the latest. `<name>/promotions.jsonl` keeps every change of the active version, so a rollback
knows where to go back to.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from workhorse.errors import TaskNotFoundError, TaskSpecError
from workhorse.paths import workhorse_home
from workhorse.tasks.spec import TaskSpec

EXAMPLES_DIR = Path(__file__).parent / "examples"
ADAPTER_FILE = "adapter.gguf"  # see tasks.engines.adapter_of


def tasks_dir() -> Path:
    path = workhorse_home() / "tasks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_task(text: str, source: str = "<task>") -> TaskSpec:
    """Validate YAML text as a task; errors name the file, line and field."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise TaskSpecError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise TaskSpecError(f"{source}: a task file must be a YAML mapping", "start from `workhorse tasks new`")
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            loc = problem["loc"]
            line = _line_of(root, loc)
            field = ".".join(str(part) for part in loc) or "(task)"
            lines.append(f"{source}:{line}: {field}: {problem['msg']}" if line else f"{source}: {field}: {problem['msg']}")
        raise TaskSpecError("invalid task\n  " + "\n  ".join(lines), "see `workhorse tasks new --help` for a template") from None


def _line_of(node: Any, loc: tuple) -> int | None:
    """1-based line of the YAML node at a pydantic error location (the nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((value for key, value in node.value if key.value == part), None)
            if match is None:
                return line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def load_task(name_or_path: str | Path, *, version: int | None = None) -> tuple[TaskSpec, Path]:
    """A task by file path or by name (its active version unless given: the promoted one, else the
    latest). Returns (spec, its directory)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise TaskNotFoundError(f"task file not found: {path}", "check the path")
        return parse_task(path.read_text(encoding="utf-8"), str(path)), path.parent
    name = str(name_or_path)
    versions = task_versions(name)
    if versions:
        chosen = version or active_version(name) or versions[-1]
        if chosen not in versions:
            raise TaskNotFoundError(f"task {name!r} has no version {chosen}", f"versions: {versions}")
        directory = tasks_dir() / name / f"v{chosen}"
        return parse_task((directory / "task.yaml").read_text(encoding="utf-8"), str(directory / "task.yaml")), directory
    example = EXAMPLES_DIR / f"{name}.yaml"
    if example.is_file():
        return parse_task(example.read_text(encoding="utf-8"), str(example)), example.parent
    known = sorted({*list_task_names(), *(p.stem for p in EXAMPLES_DIR.glob("*.yaml"))})
    raise TaskNotFoundError(
        f"unknown task {name!r}; known tasks: {', '.join(known) or 'none'}",
        "create one with `workhorse tasks new NAME` or `workhorse fit DATA --task NAME`",
    )


def task_versions(name: str) -> list[int]:
    directory = tasks_dir() / name
    if not directory.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in directory.glob("v*") if p.name[1:].isdigit() and (p / "task.yaml").is_file())


def list_task_names() -> list[str]:
    return sorted(p.name for p in tasks_dir().iterdir() if p.is_dir() and task_versions(p.name))


def version_dir(spec: TaskSpec) -> Path:
    directory = tasks_dir() / spec.name / f"v{spec.version}"
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        fsync_dir(directory.parent)  # the new folders' entries, so that a crash does not lose them
        fsync_dir(directory.parent.parent)
    return directory


def save_task(spec: TaskSpec) -> Path:
    """Write `spec` as version `spec.version` of its task; returns the version directory. The
    version becomes visible when its task.yaml lands, so write trained parts before this."""
    directory = version_dir(spec)
    text = yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False, allow_unicode=True)
    write_durably(directory / "task.yaml", text.encode("utf-8"))
    return directory


def write_durably(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old file or the new one, never a
    part: a temp file of its own (concurrent writers do not share one) in the same folder,
    fsync'd, renamed over `path`, and the folder fsync'd so that the rename is on disk too. On
    any error the temp file is removed."""
    descriptor, temp = _temp_beside(path)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def copy_durably(source: Path, target: Path) -> None:
    """`shutil.copy2` by way of a temp file, with the same guarantees as `write_durably`."""
    descriptor, temp = _temp_beside(target)
    try:
        with os.fdopen(descriptor, "wb") as handle, source.open("rb") as original:
            shutil.copyfileobj(original, handle)
            handle.flush()
            os.fsync(handle.fileno())
        shutil.copystat(source, temp)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def _temp_beside(path: Path) -> tuple[int, Path]:
    """A new file in `path`'s folder (a rename stays on one file system) with a name of its own,
    created with the mode a plain open gives (0666 less the umask)."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp


def fsync_dir(directory: Path) -> None:
    """Put a folder's entries (a rename, a new file or folder) on disk."""
    descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def next_version(name: str) -> int:
    versions = task_versions(name)
    return versions[-1] + 1 if versions else 1


def save_revision(spec: TaskSpec, trained_from: Path, write: Callable[[Path], None] | None = None) -> Path:
    """Save `spec` as the next version of its task, carrying over the trained parts (heads,
    detectors, the LoRA adapter) of the version in `trained_from`; `write` then puts the revision's
    own parts in its folder. Returns the new version's directory."""
    revised = spec.model_copy(update={"version": next_version(spec.name)})
    directory = version_dir(revised)
    if trained_from.resolve() != EXAMPLES_DIR.resolve():
        for part in [*trained_from.glob("*.npz"), *trained_from.glob(ADAPTER_FILE)]:
            copy_durably(part, directory / part.name)  # on disk before the task.yaml that names the version
    if write is not None:
        write(directory)
    saved = save_task(revised)
    make_active(revised.name, revised.version, reason="revised")
    return saved


ACTIVE_FILE = "active"
PROMOTIONS_FILE = "promotions.jsonl"


def active_version(name: str) -> int | None:
    """The promoted version of task `name`, or None when none was promoted (the latest answers)."""
    path = tasks_dir() / name / ACTIVE_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and int(text) in task_versions(name) else None


def promote(name: str, version: int, *, reason: str) -> int | None:
    """Make `version` the active version of task `name`; returns the version it replaces. The
    change is appended to the task's promotions before the pointer moves."""
    versions = task_versions(name)
    if version not in versions:
        raise TaskNotFoundError(f"task {name!r} has no version {version}", f"versions: {versions or 'none'}")
    previous = active_version(name) or (versions[-1] if versions else None)
    entry = {"time": time.time(), "from": previous, "to": version, "reason": reason}
    with (tasks_dir() / name / PROMOTIONS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    write_durably(tasks_dir() / name / ACTIVE_FILE, f"{version}\n".encode())
    return previous


def promotions(name: str) -> list[dict[str, Any]]:
    """Every change of task `name`'s active version, oldest first."""
    path = tasks_dir() / name / PROMOTIONS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rollback(name: str, version: int | None = None) -> int:
    """Make `version` (by default the version active before the current one) the active version again."""
    if version is None:
        current = active_version(name)
        history = [entry for entry in promotions(name) if entry["to"] == current and entry["from"] is not None]
        if current is None or not history:
            raise TaskNotFoundError(f"task {name!r} has no earlier active version to go back to",
                                    "name the version: workhorse tasks rollback NAME VERSION")
        version = history[-1]["from"]
    promote(name, version, reason="rollback")
    return version


def pin_active(name: str) -> None:
    """Name the current active version explicitly, so that a version saved next (a candidate that
    must pass a gate) does not become active by being the latest."""
    versions = task_versions(name)
    if versions and active_version(name) is None:
        promote(name, versions[-1], reason="active before a gated candidate")


def make_active(name: str, version: int, *, reason: str) -> None:
    """A version saved by the user's own command (`fit`, a revision) answers from now on: with no
    promoted version the latest does already; otherwise the promotion moves to it."""
    if active_version(name) is not None:
        promote(name, version, reason=reason)
