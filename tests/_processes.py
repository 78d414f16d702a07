"""Start several worker processes for a multi-process test and wait for all of them.

Shared by the two-process tests (PyTorch DDP, ``jax.distributed``): a free localhost port for
their rendezvous, and a bounded run that kills every worker still alive when it ends and fails
with the stderr of a worker that did not exit 0.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(commands: Sequence[Sequence[str]], *, env: Mapping[str, str], cwd: Path,
                  timeout: float) -> None:
    """Run ``commands`` side by side; each must exit 0 within ``timeout`` seconds."""
    procs = [subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cmd in commands]
    try:
        errs = [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, err in zip(procs, errs, strict=True):
        assert p.returncode == 0, err[-4000:]
