"""Socket activation (`--web.systemd-socket`), as sd_listen_fds(3) defines it.

systemd (or `systemd-socket-activate`) binds the listening sockets, starts
the exporter with them as file descriptors 3, 4, ... and says so in
LISTEN_FDS and LISTEN_PID. The exporter then needs no right to bind, and
the socket unit decides the address. Like the exporter-toolkit, the
variables are removed once read, so a child process does not take the
sockets for its own.
"""

from __future__ import annotations

import os
import socket

from sigma_exporter.config import ConfigError

SD_LISTEN_FDS_START = 3


def listen_sockets() -> list[socket.socket]:
    """The stream sockets passed by systemd; ConfigError when there are none."""
    pid = os.environ.pop("LISTEN_PID", "")
    count = os.environ.pop("LISTEN_FDS", "")
    os.environ.pop("LISTEN_FDNAMES", None)
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit() or not int(count):
        raise ConfigError("--web.systemd-socket", "LISTEN_FDS",
                          "no socket activation file descriptors found",
                          "start the exporter from a systemd .socket unit (or "
                          "systemd-socket-activate), or use --web.listen-address")
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            sock.detach()
            raise ConfigError("--web.systemd-socket", f"fd {fd}", "not a stream socket",
                              "use ListenStream= in the socket unit")
        sockets.append(sock)
    return sockets
