"""Hostile Sigma servers (issue 15): whatever one sends, its cost is bounded and counted.

Each test here failed on 0.1: a compression bomb that inflated to gigabytes,
answers whose failure escaped the poll as an exception (the target then never
appeared and /-/ready stayed 503), malformed HTTP counted as `connect`, and
headers without a size cap. Memory is measured as the peak RSS of a fresh
subprocess around one fetch, with a generous bound.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import replace
from typing import Any

import orjson
import pytest
from conftest import FIXTURES
from feed import Fed
from test_transport import Scripted, answering, ok

from sigma_exporter.agent.crosscheck import CrossCheck
from sigma_exporter.agent.crosscheck import _gpu_order as crosscheck_order
from sigma_exporter.agent.nvml import DriverInfo, GpuReading
from sigma_exporter.agent.source import NvmlSource
from sigma_exporter.collect import exposition
from sigma_exporter.collect.counters import MAX_CODES
from sigma_exporter.collect.health import TargetHealth
from sigma_exporter.collect.samples import Samples
from sigma_exporter.config import (
    DEFAULT_MAX_SERIES,
    Config,
    ConfigError,
    JobsConfig,
    TargetConfig,
    parse_config,
)
from sigma_exporter.logsetup import plain
from sigma_exporter.metrics import BY_NAME
from sigma_exporter.poll.scheduler import Poller
from sigma_exporter.source import client as client_module
from sigma_exporter.source import units
from sigma_exporter.source.client import DUMP_REQUEST, Answer, PollError, SigmaClient, SSLContexts
from sigma_exporter.source.parse import parse_dump

# gzip of gzip of 1 GiB of zeros: 1,827 bytes on the wire.
BOMB = (FIXTURES / "bomb-1GiB.gz.gz").read_bytes()
DUMP = (FIXTURES / "dump-sample.json").read_bytes()
# The most a single fetch may add to the peak RSS, whatever the server sends
# (the cap on the body is 8 MiB; the bombs below would add 1-2 GiB unbounded).
RSS_BOUND_MIB = 96


def answer(head: bytes, body: bytes) -> bytes:
    return head + b"\r\n\r\n" + body


async def fetch(url: str, **overrides: Any) -> Answer | PollError:
    target = replace(TargetConfig(name="t", url=url, timeout=5.0), **overrides)
    client = SigmaClient(target, SSLContexts())
    try:
        return await client.fetch(DUMP_REQUEST)
    except PollError as error:
        return error
    finally:
        await client.aclose()


def fetch_from(*answers: bytes, keep: bool = False, **overrides: Any) -> Answer | PollError:
    async def main() -> Answer | PollError:
        async with Scripted(answering(*answers, keep=keep)) as server:
            return await fetch(server.url(), **overrides)
    return asyncio.run(main())


def counted(health: TargetHealth, *sources: str) -> dict[tuple[str, str], int]:
    """The failure counters that counted something (the rest exist at 0), of `sources`
    (default: all)."""
    return {(name, reason): count for name, s in health.sources.items()
            for reason, count in s.failures.items()
            if count and (not sources or name in sources)}


def reason(result: Answer | PollError) -> str:
    assert isinstance(result, PollError), f"expected a failure, got {result!r}"
    return result.reason


# --- finding 1: compression bombs ------------------------------------------------

# One fetch in a fresh interpreter, against a loopback server in the same
# process that answers with BODY under the given head; prints the reason and
# how far the fetch raised the peak RSS.
_RSS_SCRIPT = r"""
import asyncio, json, resource, sys
from sigma_exporter.collect import exposition
from sigma_exporter.source import units
from sigma_exporter.source.client import DUMP_REQUEST, PollError, SigmaClient, SSLContexts
from sigma_exporter.config import TargetConfig

head_lines, body = sys.argv[1], open(sys.argv[2], "rb").read()
header_flood = int(sys.argv[3])

async def serve(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n" + head_lines.encode().replace(b"|", b"\r\n"))
        line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
        for _ in range(header_flood // len(line)):  # headers that never end, if asked
            writer.write(line)
            await writer.drain()
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = SigmaClient(TargetConfig(name="t", url=f"http://127.0.0.1:{port}/",
                                      timeout=60.0, interval=120.0), SSLContexts())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        await client.fetch(DUMP_REQUEST)
        result = "ok"
    except PollError as error:
        result = error.reason
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    await client.aclose()
    server.close()
    print(json.dumps({"reason": result, "grown_mib": grown / 1024}))

asyncio.run(main())
"""


def one_fetch_in_subprocess(tmp_path: Any, head: str, body: bytes,
                            header_flood: int = 0) -> dict[str, Any]:
    path = tmp_path / "body.bin"
    path.write_bytes(body)
    done = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, head, str(path), str(header_flood)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_stacked_gzip_bomb_is_refused_in_bounded_memory(tmp_path: Any) -> None:
    result = one_fetch_in_subprocess(tmp_path, "Content-Encoding: gzip, gzip|", BOMB)
    assert result["reason"] == "too_large"
    assert result["grown_mib"] < RSS_BOUND_MIB, result


def test_gzip_bomb_stops_at_the_inflated_cap_in_bounded_memory(tmp_path: Any) -> None:
    single = gzip.decompress(BOMB)  # gzip of 1 GiB of zeros: 1 MB, under the 8 MiB cap
    result = one_fetch_in_subprocess(tmp_path, "Content-Encoding: gzip|", single)
    assert result["reason"] == "too_large"
    assert result["grown_mib"] < RSS_BOUND_MIB, result


def test_compressed_answers_that_fit_are_read() -> None:
    deflated = gzip.compress(DUMP)
    for head, body in ((b"Content-Encoding: gzip", deflated),
                       (b"Content-Encoding: x-gzip", deflated),
                       (b"Content-Encoding: deflate", __import__("zlib").compress(DUMP)),
                       (b"Content-Encoding: identity", DUMP),
                       # two gzip members, as `cat a.gz b.gz` makes: one body
                       (b"Content-Encoding: gzip",
                        gzip.compress(DUMP[:100]) + gzip.compress(DUMP[100:]))):
        framed = answer(b"HTTP/1.1 200 OK\r\n" + head
                        + b"\r\nContent-Length: %d" % len(body), body)
        result = fetch_from(framed)
        assert isinstance(result, Answer), (head, result)
        assert result.body == orjson.loads(DUMP)


# --- finding 2: every failure of a fetch is a counted reason -------------------------


def test_plain_body_labelled_gzip_is_protocol() -> None:
    # nginx with `gzip_static` misconfigured: plain JSON under Content-Encoding: gzip.
    framed = answer(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                    b"Content-Length: %d" % len(DUMP), DUMP)
    assert reason(fetch_from(framed)) == "protocol"


def test_truncated_gzip_is_protocol() -> None:
    packed = gzip.compress(DUMP)[:-20]
    framed = answer(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                    b"Content-Length: %d" % len(packed), packed)
    assert reason(fetch_from(framed)) == "protocol"


def test_an_encoding_we_did_not_ask_for_is_protocol() -> None:
    framed = answer(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2", b"{}")
    assert reason(fetch_from(framed)) == "protocol"


def test_duplicate_content_length_is_protocol() -> None:
    framed = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3", b"{}")
    assert reason(fetch_from(framed)) == "protocol"


def test_body_cut_short_of_its_content_length_is_protocol() -> None:
    framed = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4000", DUMP[:100])
    assert reason(fetch_from(framed, keep=False)) == "protocol"


def test_host_name_with_a_64_character_label_is_connect() -> None:
    url = "http://" + "a" * 64 + ".example:9/"
    assert reason(asyncio.run(fetch(url))) == "connect"


def test_memory_error_while_decoding_is_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(data: bytes) -> object:
        raise MemoryError
    monkeypatch.setattr("sigma_exporter.source.client.orjson.loads", exhausted)
    assert reason(fetch_from(ok(DUMP))) == "too_large"


def test_failed_fetch_never_escapes_the_poll_and_readiness_still_comes() -> None:
    """One target per hostile answer beside a healthy one: every target is polled,
    the round completes (what /-/ready waits for), each failure counted."""
    hostile = {
        "bad-gzip": (answer(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                            b"Content-Length: %d" % len(DUMP), DUMP), "protocol"),
        "bomb": (answer(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip, gzip\r\n"
                        b"Content-Length: %d" % len(BOMB), BOMB), "too_large"),
        "dup-length": (answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2",
                              b"{}"), "protocol"),
    }

    async def main() -> Poller:
        async with Scripted(answering(ok(DUMP))) as healthy:
            servers = {name: Scripted(answering(raw, keep=False))
                       for name, (raw, _) in hostile.items()}
            for server in servers.values():
                await server.__aenter__()
            try:
                targets = [TargetConfig(name="healthy", url=healthy.url(), timeout=5.0,
                                        jobs=JobsConfig(enabled=False))]
                targets += [TargetConfig(name=name, url=server.url(), timeout=5.0,
                                         jobs=JobsConfig(enabled=False))
                            for name, server in servers.items()]
                targets.append(TargetConfig(name="idna", url="http://" + "a" * 64 + ".x:9/",
                                            timeout=5.0, jobs=JobsConfig(enabled=False)))
                poller = Poller(Config(tuple(targets)))
                await poller.poll_all_once()
                await poller.stop()
                return poller
            finally:
                for server in servers.values():
                    await server.__aexit__(None, None, None)

    poller = asyncio.run(main())
    assert poller.first_round.is_set()
    assert poller.targets["healthy"].health.up is True
    expected = {name: why for name, (_, why) in hostile.items()} | {"idna": "connect"}
    for name, why in expected.items():
        health = poller.targets[name].health
        assert health.up is False, name
        assert counted(health) == {("dump", why): 1}, (name, counted(health))


# --- finding 6: response headers are capped --------------------------------------------


def test_endless_headers_are_too_large_in_bounded_memory(tmp_path: Any) -> None:
    result = one_fetch_in_subprocess(tmp_path, "", b"{}", header_flood=48 * 1024 * 1024)
    assert result["reason"] == "too_large"
    assert result["grown_mib"] < RSS_BOUND_MIB, result


def test_one_huge_header_is_too_large() -> None:
    framed = answer(b"HTTP/1.1 200 OK\r\nX-Junk: " + b"j" * 200_000
                    + b"\r\nContent-Length: 2", b"{}")
    assert reason(fetch_from(framed)) == "too_large"


# --- finding 3: CPU per answer is linear ----------------------------------------------

# 64 bytes each: spaces (and digits) that made the old duration pattern backtrack.
HOSTILE_DURATIONS = (" " * 63 + "x", "1" + " " * 62 + "x", "1 " * 31 + " x", "1d" + " " * 61 + "x")


def _state(**overrides: Any) -> Fed:
    return Fed(TargetConfig(name="t", url="http://127.0.0.1:9/"), **overrides)


def _progress(jobs: dict[str, Any]) -> Answer:
    return Answer({"result": jobs}, time.time(), 0.01)


def _progress_errors(fed: Fed) -> dict[str, int]:
    progress = fed.state.health.sources["progress"]
    return dict(progress.parse_errors)


def _parse_errors(fed: Fed) -> dict[str, int]:
    return {k: v for s in fed.state.health.sources.values() for k, v in s.parse_errors.items()}


def test_hostile_durations_cost_microseconds_not_tenths_of_seconds() -> None:
    started = time.process_time()
    for _ in range(10):
        for text in HOSTILE_DURATIONS:
            assert units.duration_seconds(text) is None
    # 0.1 spent up to 0.25 s on one: 2.5 s or more here. Now about a millisecond.
    assert time.process_time() - started < 1.0


def test_a_progress_answer_of_hostile_durations_is_cheap_to_ingest() -> None:
    jobs = {f"job-{i}": {"state": "running", "Life": HOSTILE_DURATIONS[i % 4],
                         "PTS": HOSTILE_DURATIONS[(i + 1) % 4]} for i in range(40)}
    state = _state()
    started = time.process_time()
    state.round({}, _progress(jobs))
    assert time.process_time() - started < 1.0  # 0.1: 2.5 s and more, every poll
    assert state.state.health.sources["progress"].up is True
    assert _progress_errors(state) == {"progress.job.life": 40, "progress.job.pts": 40}


def test_jobs_left_out_by_the_filters_are_not_parsed() -> None:
    jobs = {f"skip-{i}": {"state": None, "Life": None, "error": "x"} for i in range(2000)}
    jobs["keep-1"] = {"state": "running", "Life": "1h"}
    state = _state(jobs=JobsConfig(include=re.compile("^keep")))
    samples = state.round({}, _progress(jobs))
    # No field of a skipped job was read: none of their bad fields is reported.
    assert _progress_errors(state) == {}
    assert samples["sigma_jobs_dropped"] == [(("t",), 2000.0)]
    assert samples["sigma_job_uptime_seconds"] == [(("t", "keep-1"), 3600.0)]


def test_jobs_beyond_the_max_are_not_parsed() -> None:
    jobs = {f"job-{i}": {"state": None} for i in range(600)}
    state = _state(jobs=JobsConfig(max=10))
    samples = state.round({}, _progress(jobs))
    assert _progress_errors(state) == {"progress.job.state": 10}
    assert samples["sigma_jobs_dropped"] == [(("t",), 590.0)]


# --- finding 4: error codes per job are bounded ----------------------------------------


def test_error_codes_that_change_every_poll_stay_bounded_and_counted() -> None:
    state = _state()
    for poll in range(300):
        line = f"[08-13 11:48:{poll % 60:02d}] failure {poll} (code: E{poll})"
        state.round({}, _progress({"ch": {"state": "running", "error": [line]}}))
    samples = state.round({}, _progress({"ch": {"state": "running", "error": []}}))
    codes = dict((labels[2], count) for labels, count
                 in samples["sigma_job_errors_total"])
    assert len(codes) == MAX_CODES + 1  # 0.1: one series per code, 300 and growing
    assert codes["other"] == 300 - MAX_CODES
    assert sum(codes.values()) == 300  # no line lost


# --- finding 5: a series budget per target ---------------------------------------------


def _dump_with(**system: Any) -> Answer:
    body = orjson.loads(DUMP)
    body["System"].update(system)
    return Answer(body, time.time(), 0.01)


def _data_series(samples: Samples) -> int:
    """Series of the Sigma data (health series aside)."""
    return sum(len(v) for name, v in samples.items()
               if BY_NAME[name].source in ("dump", "progress"))


def test_nested_lists_cannot_multiply_past_the_series_budget(
        caplog: pytest.LogCaptureFixture) -> None:
    # 512 devices of 1,024 codecs: under every per-list cap, 512k series in 0.1.
    devices = [{"name": f"d{i}", "encoder": [f"c{j}" for j in range(1024)]} for i in range(512)]
    body = orjson.loads(DUMP)
    body["supported"] = devices
    state = _state(jobs=JobsConfig(enabled=False))
    started = time.process_time()
    for _ in range(2):
        samples = state.round(Answer(body, time.time(), 0.01))
    assert time.process_time() - started < 2.0  # 0.1: about 5 s and 500 MB per poll
    assert state.state.health.up is False
    assert counted(state.state.health) == {("dump", "series_limit"): 2}
    assert samples["sigma_up"] == [(("t",), 0.0)]
    assert samples["sigma_series_dropped"][0][1] > DEFAULT_MAX_SERIES
    assert "sigma_codec_info" not in samples and "sigma_host_cpu_cores" not in samples
    warnings = [r for r in caplog.records if "series budget exceeded" in plain(r)]
    assert len(warnings) == 1  # logged once, not every poll


def test_one_gpu_with_a_hundred_thousand_keys_is_over_budget() -> None:
    gpu = {"index": 0, "name": "A10"} | {f"k{i}": i for i in range(100_000)}
    state = _state(jobs=JobsConfig(enabled=False))
    samples = state.round(_dump_with(gpu=[gpu]))
    assert state.state.health.up is False
    assert _data_series(samples) == 0  # 0.1: 100,000 series of sigma_gpu_reported_value


def test_progress_over_budget_keeps_the_dump() -> None:
    jobs = {f"job-{i}": {"state": "running", "speed": 1, "Life": "1h"} for i in range(400)}
    state = _state(max_series=1000)
    samples = state.round(Answer(orjson.loads(DUMP), time.time(), 0.01), _progress(jobs))
    health = state.state.health
    assert health.up is True
    assert health.sources["progress"].up is False
    assert counted(health) == {("progress", "series_limit"): 1}
    assert "sigma_job_up" not in samples and samples["sigma_host_cpu_cores"]
    # Back within budget: the progress data returns.
    samples = state.round(Answer(orjson.loads(DUMP), time.time(), 0.01),
                          _progress(dict(list(jobs.items())[:10])))
    assert health.sources["progress"].up is True and health.series_dropped == 0
    assert len(samples["sigma_job_up"]) == 10


def test_max_series_is_configurable() -> None:
    config = parse_config({"targets": [{"url": "http://a:1", "max_series": 50}]}, "t.yml")
    assert config.targets[0].max_series == 50
    assert parse_config({"targets": [{"url": "http://a:1"}]}, "t.yml").targets[0].max_series \
        == DEFAULT_MAX_SERIES
    with pytest.raises(ConfigError, match="max_series"):
        parse_config({"targets": [{"url": "http://a:1", "max_series": 0}]}, "t.yml")


def test_a_list_cut_at_its_cap_is_counted() -> None:
    state = _state(jobs=JobsConfig(enabled=False))
    state.round(_dump_with(network=[{"name": f"eth{i}", "ip": "10.0.0.1"}
                                    for i in range(2000)]))
    assert _parse_errors(state).get("system.network") == 1  # 0.1: cut silently


# --- findings 8 and 9, and the agent's other failures ------------------------------------


class ScriptedNvml:
    """An NVML backend whose reads return `readings`, raise `error`, or hang until released."""

    def __init__(self, error: BaseException | None = None, hang: bool = False) -> None:
        self.error, self.hang = error, hang
        self.released = threading.Event()
        self.reads = 0
        self.closed = False

    def init(self) -> DriverInfo:
        return DriverInfo("550.54.15", 1)

    def read(self) -> tuple[GpuReading, ...]:
        self.reads += 1
        if self.hang:
            self.released.wait()
        if self.error is not None:
            raise self.error
        return (GpuReading(index=0, name="NVIDIA A10", memory_total_bytes=24 * 2**30),)

    def close(self) -> None:
        self.closed = True


def _agent(backend: ScriptedNvml, timeout: float = 0.2) -> tuple[NvmlSource, Fed]:
    """An agent-mode target: dump and NVML (no progress)."""
    nvml = NvmlSource("t", backend, CrossCheck(target="t"), timeout=timeout)
    return nvml, _state(jobs=JobsConfig(enabled=False), extra=[nvml])


async def nvml_round(fed: Fed, dump: Answer | None) -> Samples:
    """One agent-mode round as the poll loop runs it; dump None: the dump fails.
    Its NVML series (nvml and cross-check), if any."""
    fed.client.answers = {"dump": dump if dump is not None else PollError("connect", "down")}
    await fed.state.poll()
    samples = exposition.read_back(fed.state.published.rendered)
    return {name: v for name, v in samples.items() if BY_NAME[name].source == "nvml"}


def test_hanging_nvml_read_is_an_nvml_error_within_its_deadline() -> None:
    backend = ScriptedNvml(hang=True)
    hook, state = _agent(backend)

    async def main() -> None:
        async with asyncio.timeout(30):  # 0.1 waited here for ever
            for _ in range(3):
                assert await nvml_round(state, None) == {}
        backend.released.set()
        backend.hang = False
        while hook._reading is not None and not hook._reading.done():
            await asyncio.sleep(0.01)
        assert await nvml_round(state, None)  # the driver answers again: samples again

    try:
        asyncio.run(main())
    finally:
        backend.released.set()
    assert counted(state.state.health, "nvml") == {("nvml", "nvml_error"): 3}
    assert state.state.health.sources["nvml"].up is True
    assert backend.reads == 2  # the stuck read was never piled on: one thread at a time


_HUNG_EXIT_SCRIPT = r"""
import asyncio, threading
from sigma_exporter.agent.source import NvmlSource
from sigma_exporter.config import TargetConfig
from sigma_exporter.agent.crosscheck import CrossCheck
from sigma_exporter.poll.target import TargetState

class Stuck:
    def init(self): pass
    def read(self): threading.Event().wait()
    def close(self): threading.Event().wait()

async def main():
    nvml = NvmlSource("t", Stuck(), CrossCheck(target="t"), timeout=0.2)
    state = TargetState(TargetConfig(name="t", url="http://127.0.0.1:9/"), [nvml])
    await state.poll()
    nvml.close()
    print("nvml_up", state.health.sources["nvml"].up)

asyncio.run(main())
"""


def test_a_stuck_nvml_read_does_not_hold_up_the_exit() -> None:
    done = subprocess.run([sys.executable, "-c", _HUNG_EXIT_SCRIPT], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nvml_up False" in done.stdout


def test_any_exception_of_an_nvml_round_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    _, state = _agent(ScriptedNvml(error=RuntimeError("pynvml bug")))
    for _ in range(2):
        assert asyncio.run(nvml_round(state, None)) == {}
    # Not the driver's answer but an exception nobody foresaw: a bug, `internal`.
    assert counted(state.state.health, "nvml") == {("nvml", "internal"): 2}
    assert state.state.health.sources["nvml"].up is False
    # The traceback once, not every round: the counter shows that it repeats.
    tracebacks = [r for r in caplog.records if r.exc_info and "source=nvml" in plain(r)]
    assert len(tracebacks) == 1


def test_a_gpu_index_that_is_not_a_number_is_a_parse_error_not_an_exception() -> None:
    gpu = {"index": "²", "name": "A10", "total": "22731MB"}
    _, state = _agent(ScriptedNvml())
    for _ in range(2):  # 0.1: ValueError from int("²") every round, nvml_up left at 1
        samples = asyncio.run(nvml_round(state, _dump_with(gpu=[gpu])))
        assert samples["sigma_gpu_crosscheck_gpu_missing"]
    assert _parse_errors(state).get("system.gpu[].index") == 2
    assert exposition.read_back(state.state.published.rendered)["sigma_gpu_info"] == [
        (("t", "0", "A10"), 1.0)]
    health = state.state.health
    assert health.sources["nvml"].up is True and counted(health) == {}
    assert crosscheck_order("²") == (1 << 30, "²")


def test_nvml_timeout_is_configurable() -> None:
    assert parse_config({"targets": [{"url": "http://a:1"}], "nvml": {"timeout": "500ms"}},
                        "t.yml").nvml.timeout == 0.5


def test_many_headers_arriving_in_one_read_are_too_large() -> None:
    # 100 KB of headers and the body in one write: one read, parsed at once.
    pads = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(100))
    framed = answer(b"HTTP/1.1 200 OK\r\n" + pads + b"Content-Length: 2", b"{}")
    assert reason(fetch_from(framed)) == "too_large"


# --- a poll's whole cost stays within its timeout ------------------------------------------


def test_an_answer_too_big_to_read_in_the_time_left_is_refused_unread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With what reading costs here (READ_COST), an answer that cannot be decoded and
    parsed within the timeout its fetch left is refused before it is decoded."""
    decoded: list[int] = []
    real_loads = orjson.loads

    def counting(data: bytes) -> Any:
        decoded.append(len(data))
        return real_loads(data)

    monkeypatch.setattr("sigma_exporter.source.client.orjson.loads", counting)
    monkeypatch.setattr(client_module.READ_COST, "seconds_per_byte", 1e-3)  # a slow host
    result = fetch_from(ok(DUMP), timeout=2.0, interval=15.0)
    assert reason(result) == "timeout" and decoded == []
    assert isinstance(result, PollError) and "refused unread" in result.message
    monkeypatch.setattr(client_module.READ_COST, "seconds_per_byte", 1e-9)
    assert isinstance(fetch_from(ok(DUMP), timeout=2.0, interval=15.0), Answer)


def test_a_read_that_overruns_the_timeout_publishes_no_data(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The backstop: a read that did not fit after all (a host busier than its
    estimate) is a timeout with its data dropped, not a late publication."""
    real_parse = parse_dump

    def slow_parse(obj: object, budget: int | None = None) -> Any:
        time.sleep(0.5)  # past the 0.3 s timeout: the host was busier than estimated
        return real_parse(obj, budget)

    monkeypatch.setattr("sigma_exporter.collect.sigma.parse_dump", slow_parse)

    async def main() -> tuple[str, Samples]:
        async with Scripted(answering(ok(DUMP))) as server:
            config = TargetConfig(name="t", url=server.url(), timeout=0.3, interval=15.0,
                                  jobs=JobsConfig(enabled=False))
            poller = Poller(Config((config,)))
            try:
                await poller.poll_all_once()
                state = poller.targets["t"]
                return (state.health.errors.get("dump", ""),
                        exposition.read_back(state.published.rendered))
            finally:
                await poller.stop()

    error, samples = asyncio.run(main())
    assert error.startswith("timeout: reading the answer") and "data dropped" in error
    assert samples["sigma_up"] == [(("t",), 0.0)] and "sigma_host_cpu_cores" not in samples


def test_the_read_cost_follows_the_reads_of_large_answers() -> None:
    cost = client_module.ReadCost(1e-6)
    cost.observe(1000, 1.0)  # small answers teach nothing: their cost is mostly overhead
    assert cost.seconds_per_byte == 1e-6
    for _ in range(50):
        cost.observe(1_000_000, 0.1)  # 100 ns per byte
    assert abs(cost.seconds_per_byte - 100e-9) < 1e-9
    assert cost.projected(2_000_000) == pytest.approx(0.2, rel=0.01)
