"""The `dump` answer of a simulated server: host, GPUs, apps, at a given time.

A pure function of the server (`SimServer`) and the time: no I/O, so tests
predict what an exporter must report without sleeping. The key case is mixed
and some numbers are plain strings on purpose, like the real answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sigma_exporter.sim.model import (
    JSON,
    SimServer,
    clamp,
    hash_ints,
    last_restart,
    life_text,
    smooth_noise,
    text_key,
    uniform,
)
from sigma_exporter.sim.progress import job_states

# Salts: each figure draws its own noise stream from the server's key.
_S_LOAD, _S_LOAD2, _S_PHASE, _S_MEM = (text_key(s) for s in ("load", "load2", "ph", "mem"))
_S_TEMP, _S_CPU, _S_RAM, _S_SWAP = (text_key(s) for s in ("t", "cpu", "ram", "swap"))
_S_MODEL, _S_QUEUE, _S_APP, _S_PID = (text_key(s) for s in ("model", "q", "app", "pid"))


@dataclass(frozen=True, slots=True)
class _GpuModel:
    name: str
    total_mib: int
    encoder: tuple[str, ...]
    decoder: tuple[str, ...]


_GPU_MODELS: Final[tuple[_GpuModel, ...]] = (
    _GpuModel(
        "NVIDIA A10",
        22731,
        (
            "h264@yuv420p",
            "h264@yuv444p",
            "hevc@yuv420p",
            "hevc@yuv444p",
            "hevc@yuv420p10le",
            "hevc@yuv444p10le",
            "h264@bframe",
            "hevc@bframe",
        ),
        ("h264@yuv420p", "hevc@yuv420p", "hevc@yuv420p10le"),
    ),
    _GpuModel(
        "Tesla T4",
        15360,
        ("h264@yuv420p", "h264@yuv444p", "hevc@yuv420p", "hevc@yuv420p10le", "h264@bframe"),
        ("h264@yuv420p", "hevc@yuv420p", "hevc@yuv420p10le", "vp9@yuv420p"),
    ),
    _GpuModel(
        "NVIDIA L4",
        23034,
        (
            "h264@yuv420p",
            "hevc@yuv420p",
            "hevc@yuv420p10le",
            "av1@yuv420p",
            "av1@yuv420p10le",
            "hevc@bframe",
        ),
        ("h264@yuv420p", "hevc@yuv420p", "hevc@yuv420p10le", "av1@yuv420p"),
    ),
)

# name, CPU key, children key (None: absent), children, base RAM MiB. Key case
# is mixed on purpose, like the real answer.
_APPS: Final[tuple[tuple[str, str, str | None, int, int], ...]] = (
    ("portal-local", "cpu", None, 0, 28),
    ("nginx", "cpu", "Child", 64, 346),
    ("prometheus-nginxlog-exporter", "CPU", None, 0, 22),
    ("origin", "CPU", "child", 4, 38),
    ("plugin-manager", "cpu", None, 0, 30),
    ("victoria-metrics", "cpu", None, 0, 95),
)
_RESTARTING_APP: Final = "nginx"


_S_LICENSE, _S_NATS = text_key("license"), text_key("nats")
# The documented answer's link came up 136 ms after the server process.
CONTROL_PLANE_DELAY = 0.136
_KEY_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def license_key(server: SimServer) -> str:
    """The server's (fake) licence key, shaped like the documented one:
    five groups of five letters and digits. A secret: no output may show it."""
    groups = []
    for g in range(5):
        n = hash_ints(*server.noise_key, _S_LICENSE, g)
        groups.append("".join(_KEY_ALPHABET[(n >> (6 * c)) % 36] for c in range(5)))
    return "-".join(groups)


def _uuid(*parts: int) -> str:
    h = f"{hash_ints(*parts):016X}{hash_ints(*parts, 1):016X}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _nats(server: SimServer, now: float) -> JSON:
    """The control-plane link: `connected` 0 while it is down; `startup` moves
    when it comes back."""
    up_since = server.control_plane_up_since
    if up_since is None or up_since > now:
        up_since = server.process_start + CONTROL_PLANE_DELAY
    down = server.control_plane_down_since is not None \
        and server.control_plane_down_since <= now
    return {
        "ID": f"{_uuid(*server.noise_key, _S_NATS)}.{server.name}-"
              f"{_uuid(*server.noise_key, _S_NATS, 2)}",
        "license": license_key(server),
        "hook": 5000,
        "startup": _iso(up_since),
        "connected": 0 if down else 1,
    }


def _iso(ts: float) -> str:
    ms_total = math.floor(ts * 1000.0)
    secs, ms = divmod(ms_total, 1000)
    dt = datetime.fromtimestamp(secs, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z"


# ---------------------------------------------------------------------------
# GPUs


def _models(server: SimServer) -> list[_GpuModel]:
    main = _GPU_MODELS[math.floor(uniform(*server.noise_key, _S_MODEL) * len(_GPU_MODELS))]
    models = [main] * server.gpus
    # Odd servers with several GPUs carry one odd card, so supported[] has two entries.
    if server.gpus >= 2 and server.index % 2 == 1:
        models[-1] = _GPU_MODELS[1] if main is not _GPU_MODELS[1] else _GPU_MODELS[0]
    return models


def _jobs_per_gpu(server: SimServer) -> list[int]:
    counts = [0] * server.gpus
    if not counts:  # a GPU-less server transcodes on the CPU
        return counts
    for j in range(server.jobs):
        counts[j % server.gpus] += 1
    return counts


def _gpu_load(server: SimServer, g: int, now: float, count: int) -> float:
    key = (*server.noise_key, g)
    wave = 15.0 * math.sin(2.0 * math.pi * (now / 1800.0 + uniform(*key, _S_PHASE)))
    slow = 30.0 * (smooth_noise(now, 300.0, *key, _S_LOAD) - 0.5)
    fast = 10.0 * (smooth_noise(now, 10.0, *key, _S_LOAD2) - 0.5)
    return clamp(20.0 + 9.0 * count + wave + slow + fast)


def _render_gpus(server: SimServer, now: float) -> tuple[list[JSON], float]:
    out: list[JSON] = []
    total_load = 0.0
    for g, (model, count) in enumerate(zip(_models(server), _jobs_per_gpu(server), strict=True)):
        key = (*server.noise_key, g)
        load = _gpu_load(server, g, now, count)
        total_load += load
        mem_frac = clamp(
            0.03 + 0.08 * count + 0.2 * load / 100.0 * smooth_noise(now, 60.0, *key, _S_MEM),
            0.0,
            0.97,
        )
        entry: JSON = {
            "index": g,
            "name": model.name,
            "total": model.total_mib,
            "used": min(model.total_mib, round(model.total_mib * mem_frac)),
            "gpu": round(clamp(0.55 * load + 4.0 * smooth_noise(now, 5.0, *key, _S_LOAD2))),
            "soft": round(clamp(2.0 + 0.05 * load)),
            "enc": round(load),
            "dec": round(clamp(0.4 * load)),
            "temp": round(
                35.0 + 0.4 * load + 3.0 * (smooth_noise(now, 120.0, *key, _S_TEMP) - 0.5)
            ),
            "speed": 1,
            "percent": round(clamp(0.8 * load + 5.0)),
            # A number as a plain string, as real answers sometimes have.
            "count": str(count) if g == 1 else count,
        }
        if server.gpu_override is not None:
            extra = server.gpu_override(g, now)
            if extra:
                entry.update(extra)
        out.append(entry)
    avg = total_load / server.gpus if server.gpus else 0.0
    return out, avg


def _supported(models: list[_GpuModel]) -> list[JSON]:
    seen: dict[str, _GpuModel] = {}
    for m in models:
        seen.setdefault(m.name, m)
    return [
        {"name": m.name, "Encoder": list(m.encoder), "decoder": list(m.decoder)}
        for m in seen.values()
    ]


# ---------------------------------------------------------------------------
# Apps and the whole answer


def _render_apps(server: SimServer, now: float) -> list[JSON]:
    start = server.process_start
    apps: list[JSON] = []
    for a, (name, cpu_key, child_key, children, ram) in enumerate(_APPS):
        began, restarts = start + 3.0 + a, 0
        if name == _RESTARTING_APP:
            began, restarts = last_restart(server.epoch, server.app_restart_period, now, began)
        key = (*server.noise_key, _S_APP, a)
        proc: JSON = {
            "pid": 1_400_000 + hash_ints(*server.noise_key, _S_PID, a) % 500_000 + restarts,
            cpu_key: f"{0.6 * smooth_noise(now, 30.0, *key):.1f}%",
            "ram": f"{round(ram * (0.9 + 0.2 * smooth_noise(now, 600.0, *key, 1)))}MB",
        }
        if child_key is not None:
            proc[child_key] = children
        apps.append(
            {"name": name, "state": "running", "Life": life_text(now - began), "process": proc}
        )
    return apps


def render_dump(server: SimServer, now: float) -> JSON:
    """The `dump` answer of this server at time `now` (Unix seconds)."""
    key = server.noise_key
    models = _models(server)
    gpus, avg_load = _render_gpus(server, now)
    cores = (32, 48, 64, 96)[hash_ints(*key, 11) % 4]
    ram_total = (64215, 128347, 257579)[hash_ints(*key, 12) % 3]
    swap_total = 16383 if hash_ints(*key, 13) % 3 else 0
    ram_used = min(
        ram_total,
        round(
            ram_total
            * (0.06 + 0.1 * smooth_noise(now, 900.0, *key, _S_RAM) + 0.001 * server.jobs)
        ),
    )
    host_cpu = clamp(4.0 + 0.3 * avg_load + 20.0 * (smooth_noise(now, 20.0, *key, _S_CPU) - 0.5))
    proc_cpu = clamp(
        25.0 * server.jobs * (0.7 + 0.6 * smooth_noise(now, 15.0, *key, _S_CPU, 1)), 0, 800
    )
    proc_ram = round(
        900 + 550 * server.jobs * (0.9 + 0.2 * smooth_noise(now, 400.0, *key, _S_RAM, 1))
    )
    queued = server.queue_override
    if queued is None:
        queued = 1 if uniform(*key, _S_QUEUE, math.floor(now / 300.0)) < 0.1 else 0
    task: JSON = {}
    for state in job_states(server, now):
        task[state] = task.get(state, 0) + 1
    if queued:
        task["pending"] = queued  # other states appear as other keys
    ip3 = 10 + server.index // 240
    ip4 = 10 + server.index % 240
    thread = 20 + 3 * server.jobs
    return {
        "name": server.name,
        "version": "3.0.12",
        "branch": "Commercial",
        "speed": 1,
        "build": "2024-02-29T06:30:09.650Z",
        "start": _iso(server.process_start),
        "local": _iso(now),
        "timezone": server.timezone,
        "hostname": server.hostname,
        "port": server.port,
        "queue": queued,
        "total": server.jobs + queued,
        "task": task,
        "supported": _supported(models),
        "System": {
            "os": ("Ubuntu 22.04.4 LTS", "Ubuntu 20.04.6 LTS")[server.index % 2],
            "cores": cores,
            "cpu": round(host_cpu, 1),
            # A plain-string number on odd servers, as real answers sometimes have.
            "thread": str(thread) if server.index % 2 else thread,
            "ramTotal": ram_total,
            "ramUsed": ram_used,
            "swapTotal": swap_total,
            "swapUsed": round(swap_total * 0.02 * smooth_noise(now, 3600.0, *key, _S_SWAP)),
            "updateTime": _iso(math.floor(now)),
            "network": [
                {"name": "bond1.901", "ip": f"172.16.{ip3}.{ip4}", "netmask": f"172.16.{ip3}.0/24"},
                {"name": "bond2.35", "ip": f"172.17.{ip3}.{ip4}", "netmask": f"172.17.{ip3}.0/24"},
            ],
            "Storage": [
                {
                    "name": "0",
                    "folder": ["/data/mediahub"],
                    "skip": [],
                    "time": 604800,
                    "delay": 360,
                }
            ],
            "log": {
                "folder": "/var/log/sigma-machine/",
                "used": 200 + math.floor(max(0.0, now - server.process_start) / 3600.0),
            },
            "gpu": gpus,
            "process": {
                "pid": 1_000_000 + hash_ints(*key, _S_PID) % 900_000,
                "CPU": f"{proc_cpu:.1f}%",
                "ram": f"{proc_ram}MB",
                "Child": 2 + 3 * server.jobs,
            },
        },
        "APPS": _render_apps(server, now),
        "nats": _nats(server, now),
        "licenseStatus": server.license_status,
        "ec": 0,
        "result": {},
        "dt": 0,
        "now": _iso(now),
    }
