"""The value grammars (sigma_exporter.grammar) and the strict reader's use of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sigma_exporter.config import ConfigError, parse_config
from sigma_exporter.grammar import parse_host_port, parse_size
from sigma_exporter.strictyaml import read_yaml
from sigma_exporter.web.webconfig import parse_web_config


@pytest.mark.parametrize(("text", "expected"), [
    (":19911", (None, 19911)),
    ("127.0.0.1:19911", ("127.0.0.1", 19911)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("localhost:0", ("localhost", 0)),  # 0: the system picks a port
    ("sigma-01.example:65535", ("sigma-01.example", 65535)),
    ("[::1]:9100", ("::1", 9100)),
    ("[::]:9100", ("::", 9100)),
    ("[fe80::1%eth0]:9100", ("fe80::1%eth0", 9100)),
    ("[::ffff:10.0.0.1]:1", ("::ffff:10.0.0.1", 1)),
])
def test_host_port_accepts(text: str, expected: tuple[str | None, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("19911", "no :PORT"),
    ("nowhere", "no :PORT"),
    ("host:", "is not a port"),
    ("host:65536", "is not a port"),
    ("host:-1", "is not a port"),
    ("host:9 1", "is not a port"),
    ("host:١٢", "is not a port"),  # Arabic-Indic digits pass isdigit, not ASCII
    ("::1:9100", "put it in brackets"),
    ("[]:9100", "is not an IPv6 address"),
    ("[host]:9100", "is not an IPv6 address"),
    ("ho st:80", "is not a host name"),
    ("http://host:80", "a URL or path, not HOST:PORT"),
    ("user@host:80", "is not a host name"),
])
def test_host_port_refuses_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_host_port(text)


@pytest.mark.parametrize(("text", "size"), [
    ("8388608", 8388608), ("8MiB", 8 * 1024**2), ("8 mb", 8 * 1024**2), ("1GiB", 1024**3),
    ("512KB", 512 * 1024), ("0", 0),
])
def test_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "8 MiBs", "1.5MiB", "-1", "8TB"])
def test_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_config_and_web_config_read_durations_alike() -> None:
    """The config file and the web config file share one duration grammar."""
    config = parse_config({"targets": [{"url": "http://h:1", "interval": "1m30s"}]}, "c.yml")
    web = parse_web_config({"rate_limit": {"interval": "1m30s", "burst": 1}}, "w.yml")
    assert config.targets[0].interval == 90.0
    assert web.rate_limit is not None and web.rate_limit.interval == 90.0
    for text in ("1.5s", "30s1m", "90"):
        with pytest.raises(ConfigError, match="is not a duration"):
            parse_config({"targets": [{"url": "http://h:1", "interval": text}]}, "c.yml")
        with pytest.raises(ConfigError, match="is not a duration"):
            parse_web_config({"rate_limit": {"interval": text, "burst": 1}}, "w.yml")


def test_web_config_interval_zero_means_no_limit() -> None:
    for zero in (0, "0", "0s"):
        assert parse_web_config({"rate_limit": {"interval": zero}}, "w.yml").rate_limit is None


def test_strict_reader_refuses_a_repeated_key_but_allows_merges(tmp_path: Path) -> None:
    merged = tmp_path / "merged.yml"
    merged.write_text("base: &b {interval: 15s}\nnext:\n  <<: *b\n  interval: 1m\n")
    assert read_yaml(str(merged), "--x")["next"] == {"interval": "1m"}
    twice = tmp_path / "twice.yml"
    twice.write_text("a:\n  b: 1\n  c: 2\n  b: 3\n")
    with pytest.raises(ConfigError) as caught:
        read_yaml(str(twice), "--x")
    assert (caught.value.key, caught.value.problem) == ("line 4", "the key 'b' is written twice")
