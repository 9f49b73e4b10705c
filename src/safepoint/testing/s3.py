"""A real S3-compatible server for tests and benchmarks: moto's server mode in its own
process on a free loopback port (``pip install 'moto[server]'``).

Example:
    >>> from safepoint.testing.s3 import start_moto_server
    >>> proc, url = start_moto_server()  # doctest: +SKIP
    >>> proc.terminate()  # doctest: +SKIP
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import BackendUnavailableError, MissingDependencyError

__all__ = ["free_port", "start_moto_server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto_server(timeout: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``moto_server`` and wait until it accepts connections.

    Returns the process (the caller terminates it) and its endpoint URL. Raises
    :class:`~safepoint.errors.MissingDependencyError` when moto's server is not
    installed beside this Python, :class:`~safepoint.errors.BackendUnavailableError`
    when it exits or does not answer within ``timeout`` seconds (it is killed then).
    """
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        raise MissingDependencyError("test", "moto_server")  # moto[server] is in the extra
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait(10)
                raise BackendUnavailableError(
                    f"moto_server on port {port} did not answer within {timeout:g} s"
                ) from None
            time.sleep(0.1)
