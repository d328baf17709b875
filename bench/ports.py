"""Free loopback ports for the benches' processes (bench/run.py, bench/memory.py)."""

from __future__ import annotations

import socket


def port_block(count: int) -> int:
    """`count` consecutive free ports below the ephemeral range (a simulator's servers)."""
    for first in range(20000, 32000 - count, 97):
        socks = []
        try:
            for offset in range(count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise OSError("no free port block")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
