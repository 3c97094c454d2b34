"""Resolve the Java classpath of a local Apache Kafka broker with Maven.

Kafka is not packaged for Python, and no Docker engine is assumed, so the broker runs
straight from its jars. They are resolved from Maven's repositories with the minimal
``pom.xml`` shipped next to this module::

    mvn -q -B -f <cache>/kafka-<version>/pom.xml dependency:copy-dependencies \
        -DoutputDirectory=<cache>/kafka-<version>/lib

The cache dir is ``$PAYGATE_CACHE_DIR`` or ``~/.cache/paygate``. A marker file is written
only after Maven succeeded, so an interrupted download is simply redone on the next call;
a file lock keeps two processes (two test runs, ``make`` and a test) from resolving into
the same directory at once.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

__all__ = [
    "KAFKA_VERSION",
    "KafkaLaunchError",
    "default_cache_dir",
    "find_java",
    "java_major_version",
    "resolve_classpath",
]

#: The Kafka release in ``pom.xml``; also names the cache sub-directory, so bumping the
#: version (in both places) makes a fresh download instead of mixing jars.
KAFKA_VERSION = "4.1.1"

#: Kafka 4.x brokers need Java 17 or newer.
MIN_JAVA_MAJOR = 17

_MARKER = ".complete"
_MAVEN_TIMEOUT_S = 900.0
_TAIL_LINES = 40


class KafkaLaunchError(RuntimeError):
    """The local Kafka broker could not be resolved, formatted, started or reached."""


def default_cache_dir() -> Path:
    """``$PAYGATE_CACHE_DIR`` if set (and not empty), else ``~/.cache/paygate``."""
    env = os.environ.get("PAYGATE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "paygate"


def tail(text: str, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text`` (for error messages)."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def find_java() -> str:
    """Path of a ``java`` executable of version 17 or newer.

    ``$JAVA_HOME/bin/java`` wins when it exists, else ``java`` on ``PATH``.
    Raises :class:`KafkaLaunchError` when there is none, or when it is too old.
    """
    java: str | None = None
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            java = str(candidate)
    if java is None:
        java = shutil.which("java")
    if java is None:
        raise KafkaLaunchError(
            "`java` was not found (neither $JAVA_HOME/bin/java nor on PATH); the local Kafka "
            f"broker needs a Java {MIN_JAVA_MAJOR}+ runtime, e.g. "
            "`apt-get install openjdk-17-jre-headless`."
        )
    major = _java_major_version(java)
    if major is not None and major < MIN_JAVA_MAJOR:
        raise KafkaLaunchError(
            f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR} or newer."
        )
    return java


def java_major_version(java: str) -> int | None:
    """The major version of the ``java`` executable (None: an unknown version format)."""
    return _java_major_version(java)


@functools.lru_cache(maxsize=8)
def _java_major_version(java: str) -> int | None:
    """Major version from ``java -version`` (``"17.0.15"`` -> 17, ``"1.8.0"`` -> 8)."""
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaLaunchError(f"could not run `{java} -version`: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if match is None:
        return None  # unknown vendor format: let the JVM speak for itself later
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:  # "1.8.0_392" style
        major = int(match.group(2))
    return major


def resolve_classpath(cache_dir: Path | None = None) -> list[Path]:
    """Return the jars of Kafka (and Log4j 2) as a sorted list, downloading them if needed.

    Maven only runs when ``<cache>/kafka-<version>/lib`` lacks its completion marker.
    Raises :class:`KafkaLaunchError` if ``mvn`` is missing or fails (with the tail of its
    output) or if the result holds no Kafka jar.
    """
    base = (cache_dir if cache_dir is not None else default_cache_dir()) / f"kafka-{KAFKA_VERSION}"
    lib = base / "lib"
    base.mkdir(parents=True, exist_ok=True)
    # Serialise resolution across processes; the lock is released when the file closes.
    with (base / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (lib / _MARKER).is_file():
            _download(base, lib)
    jars = sorted(lib.glob("*.jar"))
    if not any(jar.name.startswith(f"kafka_2.13-{KAFKA_VERSION}") for jar in jars):
        raise KafkaLaunchError(
            f"{lib} is marked complete but holds no kafka_2.13-{KAFKA_VERSION} jar; "
            f"delete {base} to download again."
        )
    return jars


def _download(base: Path, lib: Path) -> None:
    """Run Maven's ``copy-dependencies`` into a clean ``lib`` and mark it complete."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLaunchError(
            "`mvn` (Apache Maven) was not found on PATH; it is needed once to download the "
            f"Kafka {KAFKA_VERSION} jars into {lib}, e.g. `apt-get install maven`."
        )
    # Maven gets its own copy of the pom: the package may sit in a read-only site-packages,
    # and Maven may create files (target/) next to the pom it is given.
    pom = base / "pom.xml"
    pom.write_bytes(resources.files("devtools.kafka").joinpath("pom.xml").read_bytes())
    if lib.exists():  # leftovers of an interrupted run
        shutil.rmtree(lib)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={lib}",
    ]
    try:
        proc = subprocess.run(
            cmd,
            cwd=base,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_MAVEN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, str) else ""
        raise KafkaLaunchError(
            f"Maven did not finish resolving the Kafka jars within {_MAVEN_TIMEOUT_S:.0f} s:\n"
            f"{tail(out)}"
        ) from exc
    except OSError as exc:
        raise KafkaLaunchError(f"could not run Maven ({mvn}): {exc}") from exc
    if proc.returncode != 0:
        raise KafkaLaunchError(
            f"Maven failed (exit {proc.returncode}) resolving the Kafka {KAFKA_VERSION} jars "
            f"with: {' '.join(cmd)}\n--- last lines of Maven's output ---\n{tail(proc.stdout)}"
        )
    jars = sorted(p.name for p in lib.glob("*.jar"))
    if not jars:
        raise KafkaLaunchError(
            f"Maven succeeded but copied no jar into {lib}:\n{tail(proc.stdout)}"
        )
    (lib / _MARKER).write_text("\n".join(jars) + "\n")
