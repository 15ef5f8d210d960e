"""Deployment mode of federated LM training: real, separate Flower processes over loopback.

``run_deployment`` starts one ``flower-superlink`` and one ``flower-supernode`` per client (each
told its own data file through ``--node-config``), submits the app with ``flwr run`` (a Flower
App Bundle whose ``pyproject.toml`` names ``userlibri.lm.federated_app:server_app`` and
``client_app``; the job description travels in the run config), follows the ServerApp's
``progress.jsonl`` while it runs, and stops every process it started (their whole process
groups) however the run ends. Flower state (``FLWR_HOME``) and logs go under
``<work_dir>/deployment/``. Each SuperNode runs each ClientApp call in a fresh subprocess, so this
mode costs a few seconds per client message: it is for demonstrations and tests with a handful of
clients; the simulation engine is the way to run tens.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from userlibri.errors import ExternalToolError
from userlibri.fsio import write_text_atomic
from userlibri.lm.federated_app import ProgressFn
from userlibri.lm.federated_config import FederatedJob

log = logging.getLogger(__name__)

CONNECTION = "userlibri-loopback"
DEFAULT_STARTUP_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_GROUP_GONE_TIMEOUT = 10.0
APP_NAME = "userlibri-federated-lm"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise ExternalToolError(f"{name} not found beside {sys.executable}; install flwr (the 'fed' extra)")
    return str(path)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def write_app(app_dir: Path, job: FederatedJob) -> None:
    """The Flower App directory: only a ``pyproject.toml`` pointing at our installed modules."""
    text = f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{APP_NAME}"
version = "1.0.0"
description = "DP-FedAvg training of the userlibri LSTM LM"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "userlibri"

[tool.flwr.app.components]
serverapp = "userlibri.lm.federated_app:server_app"
clientapp = "userlibri.lm.federated_app:client_app"

[tool.flwr.app.config]
job = {json.dumps(str(job.path))}
"""
    app_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(app_dir / "pyproject.toml", text)


class _Processes:
    """The processes we start, each in its own session (so stopping one stops its children)."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        path = self.log_dir / f"{name}.log"
        with path.open("wb") as out:
            p = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self.procs.append((name, p, path))
        log.debug("started %s (pid %d): %s", name, p.pid, " ".join(cmd))
        return p

    def check_alive(self) -> None:
        for name, p, path in self.procs:
            if p.poll() is not None:
                raise ExternalToolError(
                    f"{name} exited early (status {p.returncode}); {path}:\n{_tail(path)}"
                )

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        for _, p, _ in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for name, p, _ in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM; killing it", name, p.pid)
            try:  # the group may outlive its leader (ServerApp / ClientApp subprocesses)
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        for name, p, _ in reversed(self.procs):
            _wait_group_gone(name, p.pid, DEFAULT_GROUP_GONE_TIMEOUT)

    def pids(self) -> list[int]:
        return [p.pid for _, p, _ in self.procs]


def _wait_group_gone(name: str, pgid: int, timeout: float) -> None:
    """Wait (bounded) until process group ``pgid`` has no member left. Killed grandchildren were
    re-parented to init and stay visible as zombies until it reaps them, so SIGKILL alone does
    not mean the group is gone; members that are our own children we reap here."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            while os.waitpid(-pgid, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() >= deadline:
            log.warning("process group of %s (%d) still not gone %g s after SIGKILL", name, pgid, timeout)
            return
        time.sleep(0.05)


def _wait_for_port(port: int, procs: _Processes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise ExternalToolError(f"flower-superlink did not listen on 127.0.0.1:{port} within {timeout:g} s")


def run_deployment(
    job: FederatedJob,
    progress: ProgressFn | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    started: list[int] | None = None,
) -> None:
    """Run ``job`` on a SuperLink and one SuperNode per client over loopback; returns when the
    ServerApp has finished. ``started`` (if given) receives the pids of the process groups we
    started (all stopped on return)."""
    base = Path(job.work_dir) / "deployment"
    home, app_dir = base / "flwr-home", base / "app"
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    write_text_atomic(
        home / "config.toml",
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n',
    )
    write_app(app_dir, job)
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    procs = _Processes(base, env)
    seen = 0
    n = len(job.clients)
    try:
        procs.start(
            "superlink",
            [
                _tool("flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
        )
        _wait_for_port(port, procs, startup_timeout)
        for i, client in enumerate(job.clients):
            node_config = f"partition-id={i} num-partitions={n} data-file={json.dumps(client)}"
            procs.start(
                f"supernode-{i}",
                [
                    _tool("flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--port",
                    str(_free_port()),
                    "--node-config",
                    node_config,
                ],
            )
        if started is not None:
            started.extend(procs.pids())
        log.info("deployment: SuperLink on 127.0.0.1:%d, %d SuperNodes; logs in %s", port, n, base)
        runner = procs.start("flwr-run", [_tool("flwr"), "run", str(app_dir), CONNECTION, "--stream"])
        if started is not None:
            started.append(runner.pid)
        while True:
            done = runner.poll() is not None
            seen = _follow(job.progress_path, seen, progress)
            if done:
                break
            for name, p, path in procs.procs:
                if p is not runner and p.poll() is not None:
                    raise ExternalToolError(
                        f"{name} exited during the run (status {p.returncode}); {path}:\n{_tail(path)}"
                    )
            time.sleep(0.5)
        if runner.returncode != 0:
            path = base / "flwr-run.log"
            raise ExternalToolError(f"flwr run failed (status {runner.returncode}); {path}:\n{_tail(path)}")
    finally:
        procs.stop()
        log.info("deployment: stopped %d processes", len(procs.procs))


def _follow(path: Path, seen: int, progress: ProgressFn | None) -> int:
    """Pass progress lines past the first ``seen`` to ``progress``; returns the new count."""
    if not path.exists():
        return seen
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    complete = lines if text.endswith("\n") else lines[:-1]
    for line in complete[seen:]:
        if progress is not None:
            progress(json.loads(line))
    return max(seen, len(complete))
