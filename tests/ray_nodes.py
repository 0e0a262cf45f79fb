"""A real multi-node Ray cluster on this machine, for the tests: each node a `ray start
--block` process in a process group of its own, with its own temp dir, one CPU, a logical
resource named after it (work can be pinned to it), its own autocompress cache (the
decoded validation cache is node-local, as on real nodes) and the fault injection
``wait-when-armed:<name>`` (a test holds that node's workers by arming it).

Everything is stopped by process group, never with `ray stop` (it would end every Ray on
the machine, a developer's own too); :meth:`RayNodes.strays` lists what is left."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import HANG_GUARD, free_port

BIN = Path(sys.executable).parent


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    temp_dir: Path
    cache: Path
    output: list[str] = field(default_factory=list)

    @property
    def group(self) -> int:
        return self.process.pid  # start_new_session: the group's id is the leader's pid

    def raylet(self) -> int:
        """The pid of this node's raylet (a process of its group)."""
        for pid in _group_members(self.group):
            if _comm(pid) == "raylet":
                return pid
        raise AssertionError(f"node {self.name} has no raylet")


class RayNodes:
    """``head(name)``, then ``add(name)``; ``kill_raylet(node)`` loses a node as a crash
    would; ``stop(node)`` ends one; ``close()`` ends every group this object started."""

    def __init__(self, root: Path, *, auth: bool = True):
        self.root = root  # the nodes' caches
        # the nodes' temp dirs: short paths (a Unix socket's path is at most 107 bytes; pytest's tmp_path is long)
        self.temp = Path(tempfile.mkdtemp(prefix="ac-ray-"))
        self.env = {**os.environ, "PATH": str(BIN) + os.pathsep + os.environ.get("PATH", ""),
                    # a lost node is declared dead after 1 s of missed health checks, not 15
                    "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "2",
                    "RAY_health_check_initial_delay_ms": "0"}
        if auth:  # a token of this cluster's own (as Ray's `get-auth-token --generate` makes it), given to
            # every process through the environment: a fresh machine has no ~/.ray/auth_token, and a developer's
            # own is left alone
            self.env["RAY_AUTH_MODE"] = "token"
            self.env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        self.nodes: list[Node] = []
        self.groups: list[int] = []
        self.port = self.dashboard_port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def head(self, name: str = "a", *, dashboard: bool = True) -> Node:
        """The head; ``dashboard`` false leaves out the dashboard and its job server (a
        dozen processes fewer on a 2-core machine)."""
        self.port, self.dashboard_port = free_port(), free_port()
        web = [f"--dashboard-port={self.dashboard_port}"] if dashboard else ["--include-dashboard=false"]
        return self._start(name, ["--head", f"--port={self.port}", *web])

    def add(self, name: str) -> Node:
        assert self.port, "start the head first"
        return self._start(name, [f"--address={self.address}"])

    def _start(self, name: str, role: list[str]) -> Node:
        temp_dir, cache = self.temp / name, self.root / f"cache-{name}"
        env = {**self.env, "AUTOCOMPRESS_CACHE": str(cache), "AUTOCOMPRESS_FAULT_INJECT": f"wait-when-armed:{name}"}
        # (no log monitor: the workers' logs are not streamed to the drivers, one process less per node)
        process = subprocess.Popen(
            [str(BIN / "ray"), "start", *role, "--block", "--num-cpus=1", f"--resources={json.dumps({name: 1})}",
             f"--temp-dir={temp_dir}", "--disable-usage-stats", "--include-log-monitor=false"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.groups.append(process.pid)
        node = Node(name, process, temp_dir, cache)
        for line in process.stdout:  # ready when it says so; one that fails exits, and its output ends
            node.output.append(line)
            if "Ray runtime started" in line:
                break
        else:
            raise AssertionError(f"ray start ({name}) failed:\n" + "".join(node.output[-30:]))
        threading.Thread(target=lambda: node.output.extend(process.stdout), daemon=True).start()
        self.nodes.append(node)
        return node

    def kill_raylet(self, node: Node) -> None:
        """SIGKILL the node's raylet (a crashed machine, as the rest of the cluster sees it);
        then end what is left of the node, as the machine's loss would."""
        os.kill(node.raylet(), signal.SIGKILL)
        self.stop(node)

    def stop(self, node: Node) -> None:
        _kill_group(node.group)
        node.process.wait(timeout=HANG_GUARD)
        self.nodes.remove(node)

    def close(self) -> None:
        for group in self.groups:
            _kill_group(group)
        for node in self.nodes:
            node.process.wait(timeout=HANG_GUARD)
        self.nodes.clear()
        self.wait_gone()  # (the temp dir goes with the last process)

    def strays(self) -> list[str]:
        """Live processes (zombies aside) of the groups started here, or whose command line
        names this cluster's temp dir: empty once :meth:`close` has done its work."""
        found = []
        for pid in _pids():
            if _state(pid) in ("Z", "X", None):
                continue
            if _pgid(pid) in self.groups or str(self.temp) in _cmdline(pid):
                found.append(f"{pid} {_cmdline(pid)[:200]}")
        return found

    def wait_gone(self, timeout: float = HANG_GUARD) -> list[str]:
        """:meth:`strays` once it is empty, or what remains after ``timeout`` (SIGKILLed
        processes take a moment to go); the nodes' temp dir goes with the last of them."""
        deadline = time.monotonic() + timeout
        while (left := self.strays()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not left:
            shutil.rmtree(self.temp, ignore_errors=True)
        return left


def _kill_group(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)  # (SIGTERM: over 10 s before a GCS goes)
    except ProcessLookupError:
        pass


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _read(pid: int, name: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    text = _read(pid, "stat")
    if text is None:
        return None
    return text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _pgid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def _comm(pid: int) -> str:
    return (_read(pid, "comm") or "").strip()


def _cmdline(pid: int) -> str:
    return (_read(pid, "cmdline") or "").replace("\0", " ").strip()


def _group_members(group: int) -> list[int]:
    return [pid for pid in _pids() if _pgid(pid) == group and _state(pid) not in ("Z", "X", None)]
