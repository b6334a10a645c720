"""The three targets and their processes: QEMU, the emulator, the floor.

Each gets the same arguments (:func:`monitor_args`): only the temporary
directory holding the sockets differs.  An :class:`Instance` waits until
every monitor socket serves a clean session (QEMU 7.2 has a startup window in
which an early client can be served by two threads; see
tests/integration/harness.py, ``Instance.wait_until_served``), and is torn
down with SIGTERM, then SIGKILL, and reaped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tools.bench.qmpraw import DEADLINE, QMPRaw

REPO_ROOT = Path(__file__).resolve().parents[2]
FLOOR_SCRIPT = Path(__file__).resolve().parent / "floor.py"

#: Attempts at a clean first session per socket (QEMU's startup window).
PROBE_ATTEMPTS = 20

#: Launch attempts when QEMU aborts in its startup window.
LAUNCH_ATTEMPTS = 3


@dataclass(frozen=True)
class Target:
    key: str  # "qemu", "emu", "base" (the emulator of --emu-base), "floor", "handoff"
    label: str
    program: tuple[str, ...]
    #: prepended to PYTHONPATH (the emulator's source tree)
    root: Path = REPO_ROOT


def qemu_target(binary: str) -> Optional[Target]:
    path = shutil.which(binary)
    return Target("qemu", "QEMU", (path,)) if path else None


def emu_target(root: Path = REPO_ROOT) -> Target:
    """``python -m system`` from *root* (default: this checkout)."""
    return Target("emu", "emulator", (sys.executable, "-m", "system"), root)


def base_target(root: Path) -> Target:
    """The emulator of another tree (``--emu-base``), measured beside ``emu`` in the same run."""
    return Target("base", "emulator (base)", (sys.executable, "-m", "system"), root)


def floor_target() -> Target:
    return Target("floor", "floor", (sys.executable, str(FLOOR_SCRIPT)))


def handoff_target() -> Target:
    """The hand-off floor: the floor with one reader-to-worker thread hand-off per request."""
    return Target("handoff", "hand-off floor", (sys.executable, str(FLOOR_SCRIPT), "--handoff"))


def monitor_args(tmpdir: str, n_monitors: int) -> tuple[list[str], list[str]]:
    """The common argv with *n_monitors* QMP monitors; returns (argv, socket paths)."""
    args = ["-nodefaults", "-machine", "none", "-display", "none"]
    paths = []
    for i in range(n_monitors):
        path = os.path.join(tmpdir, f"m{i}.sock")
        paths.append(path)
        args += [
            "-chardev", f"socket,id=m{i},path={path},server=on,wait=off",
            "-mon", f"chardev=m{i},mode=control",
        ]  # fmt: skip
    return args, paths


#: Bytecode cache of the Python targets for this run (see :func:`child_env`).
_PYCACHE: list[str] = []


def pycache_dir() -> str:
    if not _PYCACHE:
        _PYCACHE.append(tempfile.mkdtemp(prefix="bench-pycache-"))
    return _PYCACHE[0]


def remove_pycache() -> None:
    while _PYCACHE:
        shutil.rmtree(_PYCACHE.pop(), ignore_errors=True)


def child_env(root: Path) -> dict[str, str]:
    """The environment of a target: *root* first on PYTHONPATH, bytecode cached.

    An installed emulator runs from compiled bytecode; with
    PYTHONDONTWRITEBYTECODE set (as in some CI images) every start would
    compile every module again (about 80 ms here).  So bytecode is always
    written, to a cache outside the source tree (PYTHONPYCACHEPREFIX) that
    the warm-up round fills and the run removes.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache_dir()
    return env


class Instance:
    """One running target process with *n_monitors* monitor sockets."""

    def __init__(self, target: Target, n_monitors: int, prefix: tuple[str, ...] = ()) -> None:
        self.target = target
        self.tmpdir = tempfile.mkdtemp(prefix=f"bench-{target.key}-")
        self.args, self.paths = monitor_args(self.tmpdir, n_monitors)
        self.log = os.path.join(self.tmpdir, "output.log")
        self.final_output = ""
        with open(self.log, "wb") as out:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                [*prefix, *target.program, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.tmpdir,
                env=child_env(target.root),
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def path(self, name: str) -> str:
        return os.path.join(self.tmpdir, name)

    def output(self) -> str:
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_served(self) -> None:
        """Probe every socket until one session is clean (bounded)."""
        for path in self.paths:
            problem = None
            for _ in range(PROBE_ATTEMPTS):
                problem = self._probe(path)
                if problem is None:
                    break
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.target.label} exited ({self.proc.returncode}) at startup: "
                        f"{problem}\n{self.output()}"
                    )
            if problem is not None:
                raise RuntimeError(f"{self.target.label}: {path}: {problem}")

    @staticmethod
    def _probe(path: str) -> Optional[str]:
        try:
            client = QMPRaw.connect(path)
        except OSError as e:
            return f"connect: {e!r}"
        try:
            client.negotiate(oob=False)
            return None
        except (AssertionError, ValueError, EOFError, OSError) as e:
            return repr(e)
        finally:
            client.close()

    def rss_kib(self) -> int:
        """VmRSS of the process (for the emulator: the Python process itself)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def shutdown(self) -> None:
        """SIGTERM, then SIGKILL; keeps the output in :attr:`final_output`."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=DEADLINE / 2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=DEADLINE)
        finally:
            self.final_output = self.output()
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def launch(target: Target, n_monitors: int, prefix: tuple[str, ...] = ()) -> Instance:
    """Start *target* and return once every monitor serves; relaunch on a startup abort."""
    for attempt in range(1, LAUNCH_ATTEMPTS + 1):
        inst = Instance(target, n_monitors, prefix)
        try:
            inst.wait_served()
            return inst
        except BaseException:
            inst.shutdown()
            if attempt == LAUNCH_ATTEMPTS or target.key != "qemu":
                raise
    raise AssertionError("unreachable")
