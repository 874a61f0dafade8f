"""A generated Debian `/var/log/dpkg.log`, with the true event of every line.

A log parser must take package names, architectures and versions as values, and keep the event's
words (`status installed`, `startup archives unpack`): a real dpkg log has thousands of packages
and a handful of events. Real logs are personal (what a machine installed and when), so tests and
benchmarks use this one: the line shapes dpkg writes (`src/main/log.c`, `src/main/unpack.c`,
`src/main/trigproc.c` in dpkg's sources), in the order it writes them for an upgrade, an install, a
removal and a purge, over packages with made-up but realistic names, architectures and versions
(`libsystemd0:amd64 252.39-1~deb12u1`, `tzdata:all 2024a-0+deb12u1`, `1:2.38.1-5+deb12u1`).

    lines, truth = generate(5000, seed=1)        # raw lines, and each line's true template
    write_loghub(Path("/tmp/dpkg"), 5000, seed=1)  # laid out for `workhorse bench logs --data`
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

NAME = "Dpkg"
LOG_FORMAT = "<Date> <Time> <Content>"
STATES = ("installed", "half-configured", "unpacked", "half-installed", "triggers-pending", "triggers-awaited",
          "config-files", "not-installed")
_STEMS = ("systemd", "ssl", "c", "curl", "gnutls", "krb5", "pam", "xml2", "zstd", "lzma", "nghttp2", "ssh", "python3",
          "perl", "apt", "udev", "dbus", "glib2.0", "gcc", "stdc++", "expat", "sqlite3", "cap2", "seccomp", "nss",
          "openldap", "sasl2", "tinfo", "ncurses", "readline", "gpg", "gcrypt", "tasn1", "idn2", "unistring", "ffi",
          "pcre2", "selinux", "uuid", "mount", "blkid", "fdisk", "smartcols", "bpf", "elf", "dw", "archive", "json-c")
_WORDS = ("google", "cloud", "cli", "kpt", "tools", "utils", "common", "data", "dev", "bin", "base", "core", "doc",
          "runtime", "plugins", "extra", "client", "server", "daemon", "firmware", "headers", "image", "modules")
_SUFFIXES = ("+deb12u{u}", "~deb12u{u}", "+b{u}", "", "", "+dfsg-{u}", "+really{a}.{b}")


@dataclass(frozen=True)
class Package:
    name: str
    arch: str
    version: str

    @property
    def qualified(self) -> str:
        return f"{self.name}:{self.arch}"


def _package_name(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:
        stem = rng.choice(_STEMS)
        return f"lib{stem}{rng.choice(('', '0', '1', '2', '3', '6', '-dev', '-common', '1t64'))}"
    if kind < 0.8:
        return "-".join(rng.sample(_WORDS, rng.randint(1, 3)))
    if kind < 0.9:
        return f"python3-{rng.choice(_WORDS)}{rng.choice(('', 'lib', 'kit'))}"
    return f"linux-{rng.choice(('image', 'headers'))}-6.1.0-{rng.randint(10, 28)}-{rng.choice(('amd64', 'cloud-amd64'))}"


def _version(rng: random.Random) -> str:
    upstream = ".".join(str(rng.randint(0, 60)) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.08:
        upstream = f"{rng.randint(2020, 2025)}{rng.choice('abc')}"  # tzdata's `2024a`
    epoch = f"{rng.randint(1, 3)}:" if rng.random() < 0.1 else ""
    suffix = rng.choice(_SUFFIXES).format(u=rng.randint(1, 9), a=rng.randint(1, 9), b=rng.randint(0, 9))
    return f"{epoch}{upstream}-{rng.randint(0, 12)}{suffix}" if rng.random() < 0.9 else f"{epoch}{upstream}{suffix}"


def _package(rng: random.Random) -> Package:
    arch = rng.choices(("amd64", "all", "i386"), weights=(70, 28, 2))[0]
    return Package(_package_name(rng), arch, _version(rng))


class _Writer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.clock = datetime(2024, 5, 2, 10, 11, 12) + timedelta(days=rng.randint(0, 300))
        self.lines: list[str] = []
        self.truth: list[str] = []

    def write(self, content: str, template: str) -> None:
        self.clock += timedelta(seconds=self.rng.choice((0, 0, 0, 1)))
        self.lines.append(f"{self.clock:%Y-%m-%d %H:%M:%S} {content}")
        self.truth.append(template)

    def status(self, state: str, package: Package, version: str | None = None) -> None:
        # `<none>` is what dpkg writes for no version (a purged package): a word of the event, not a value
        self.write(f"status {state} {package.qualified} {version or package.version}",
                   f"status {state} <*> {'<none>' if version == '<none>' else '<*>'}")

    def session_gap(self) -> None:
        self.clock += timedelta(hours=self.rng.randint(1, 200))


def _upgrade(out: _Writer, installed: dict[str, Package], rng: random.Random) -> None:
    chosen = rng.sample(sorted(installed), min(len(installed), rng.randint(1, 12)))
    out.write("startup archives unpack", "startup archives unpack")
    upgraded = []
    for name in chosen:
        old = installed[name]
        new = Package(old.name, old.arch, _version(rng))
        out.write(f"upgrade {old.qualified} {old.version} {new.version}", "upgrade <*> <*> <*>")
        for state in ("half-configured", "unpacked", "half-installed"):
            out.status(state, old)
        if rng.random() < 0.3:
            out.write(f"conffile /etc/{old.name}/{rng.choice(('main', 'defaults', old.name))}.conf keep", "conffile <*> keep")
        out.status("unpacked", new)
        installed[name] = new
        upgraded.append(new)
    _configure(out, upgraded, installed, rng)


def _install(out: _Writer, installed: dict[str, Package], rng: random.Random) -> None:
    new = [_package(rng) for _ in range(rng.randint(1, 8))]
    new = [p for p in new if p.qualified not in installed]
    if not new:
        return
    out.write("startup archives unpack", "startup archives unpack")
    for package in new:
        out.write(f"install {package.qualified} <none> {package.version}", "install <*> <none> <*>")
        out.status("half-installed", package)
        out.status("unpacked", package)
        installed[package.qualified] = package
    _configure(out, new, installed, rng)


def _configure(out: _Writer, packages: list[Package], installed: dict[str, Package], rng: random.Random) -> None:
    out.write("startup packages configure", "startup packages configure")
    triggered = rng.sample(sorted(installed), min(len(installed), rng.randint(0, 2)))
    for name in triggered:
        out.status("triggers-pending", installed[name])
    for package in packages:
        out.write(f"configure {package.qualified} {package.version} <none>", "configure <*> <*> <none>")
        out.status("unpacked", package)
        if rng.random() < 0.2:
            out.write(f"conffile /etc/{package.name}/{package.name}.conf install", "conffile <*> install")
        out.status("half-configured", package)
        if triggered and rng.random() < 0.2:
            out.status("triggers-awaited", package)
        out.status("installed", package)
    for name in triggered:
        package = installed[name]
        out.write(f"trigproc {package.qualified} {package.version} <none>", "trigproc <*> <*> <none>")
        out.status("half-configured", package)
        out.status("installed", package)


def _remove(out: _Writer, installed: dict[str, Package], rng: random.Random, purge: bool) -> None:
    if len(installed) < 5:
        return
    chosen = [installed.pop(name) for name in rng.sample(sorted(installed), rng.randint(1, 3))]
    out.write("startup packages remove", "startup packages remove")
    for package in chosen:
        out.status("installed", package)
        out.write(f"remove {package.qualified} {package.version} <none>", "remove <*> <*> <none>")
        out.status("half-configured", package)
        out.status("half-installed", package)
        out.status("config-files", package)
    if purge:
        out.write("startup packages purge", "startup packages purge")
        for package in chosen:
            out.write(f"purge {package.qualified} {package.version} <none>", "purge <*> <*> <none>")
            out.status("config-files", package)
            out.status("not-installed", package, "<none>")


def generate(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`n` lines of a machine's dpkg log (whole sessions, cut at `n`) and each line's true template."""
    rng = random.Random(seed)
    out = _Writer(rng)
    installed: dict[str, Package] = {}
    while len(installed) < 60:
        package = _package(rng)
        installed[package.qualified] = package
    sessions: list[Callable[[], None]] = [
        lambda: _upgrade(out, installed, rng), lambda: _install(out, installed, rng),
        lambda: _remove(out, installed, rng, purge=False), lambda: _remove(out, installed, rng, purge=True),
    ]
    while len(out.lines) < n:
        rng.choices(sessions, weights=(6, 3, 1, 1))[0]()
        out.session_gap()
    return out.lines[:n], out.truth[:n]


def write_loghub(root: Path, n: int, seed: int = 0, name: str = NAME) -> Path:
    """Lay a generated log out as a Loghub-2k system (raw log, structured CSV with the true
    templates, an entry in `log_formats.json`), for `workhorse bench logs --data ROOT`."""
    import csv

    lines, truth = generate(n, seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}_2k.log").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    ids = {template: f"E{i}" for i, template in enumerate(dict.fromkeys(truth), start=1)}
    with open(folder / f"{name}_2k.log_structured_corrected.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["LineId", "Date", "Time", "Content", "EventId", "EventTemplate"])
        for number, (line, template) in enumerate(zip(lines, truth, strict=True), start=1):
            date, time, content = line.split(" ", 2)
            writer.writerow([number, date, time, content, ids[template], template])
    formats = root / "log_formats.json"
    layout = json.loads(formats.read_text(encoding="utf-8")) if formats.is_file() else {}
    layout[name] = {"log_file": f"{name}/{name}_2k.log", "log_format": LOG_FORMAT}
    formats.write_text(json.dumps(layout, indent=1), encoding="utf-8")
    return folder
