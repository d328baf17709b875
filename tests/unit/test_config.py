"""Configuration: one fixture file per mistake, each with its message."""

from __future__ import annotations

import socket

import pytest
import yaml
from conftest import FIXTURES

from sigma_exporter.config import (
    ConfigError,
    ConfigErrors,
    config_from_urls,
    load_config,
    parse_config,
)

CONFIGS = FIXTURES / "config"

# file -> (key named in the message, words of the problem, words of the fix)
MISTAKES = {
    "bad-no-targets.yml": ("targets", "at least one target", "add `targets:`"),
    "bad-empty.yml": ("targets", "empty", "add `targets:`"),
    "bad-yaml-syntax.yml": ("line 3", "not valid YAML", "fix the YAML syntax"),
    "bad-duplicate-key.yml": ("line 5", "'interval' is written twice", "keep the key once"),
    "bad-unknown-key.yml": ("targets[0].intervall", "unknown key", "interval"),
    "bad-unknown-top-key.yml": ("target", "unknown key", "targets"),
    "bad-url-scheme.yml": ("targets[0].url", "not an http(s) URL", "http://"),
    "bad-url-missing.yml": ("targets[0].url", "missing", "url: http://HOST:9999"),
    "bad-url-credentials.yml": ("targets[0].url", "credentials", "password_file"),
    "bad-duplicate-name.yml": ("targets[1].name", "used twice", "unique name"),
    "bad-name-chars.yml": ("targets[0].name", "not a valid target name", "letters, digits"),
    "bad-interval.yml": ("targets[0].interval", "not a duration", "15s"),
    "bad-timeout-longer-than-interval.yml": ("targets[0].timeout", "longer than the interval",
                                             "at most the interval"),
    "bad-method.yml": ("targets[0].method", "not GET or POST", "method: POST"),
    "bad-literal-password.yml": ("targets[0].auth.password", "may not be written",
                                 "password_file"),
    "bad-password-file-missing.yml": ("targets[0].auth.password_file", "cannot read",
                                      "check the path"),
    "bad-password-env-unset.yml": ("targets[0].auth.password_env", "is not set", "export"),
    "bad-basic-and-bearer.yml": ("targets[0].auth", "both basic auth and a bearer token",
                                 "keep one"),
    "bad-authorization-header.yml": ("targets[0].headers.Authorization", "may not be written",
                                     "bearer_token_file"),
    "bad-tls-ca-missing.yml": ("targets[0].tls.ca_file", "does not exist", "PEM file"),
    "bad-tls-skip-verify-type.yml": ("targets[0].tls.insecure_skip_verify", "not true or false",
                                     "`true` or `false`"),
    "bad-jobs-regex.yml": ("targets[0].jobs.include", "invalid regular expression", "^VTV"),
    "bad-jobs-max.yml": ("targets[0].jobs.max", "whole number", "max:"),
    "bad-body-size.yml": ("targets[0].max_body_bytes", "not a size", "8MiB"),
    "bad-nvml-enabled.yml": ("nvml.enabled", "not auto, true or false", "enabled: auto"),
    "bad-nvml-target.yml": ("nvml.target", "no target is named", "sigma-01"),
    "bad-target-not-mapping.yml": ("targets[0]", "must be a mapping", "name: value"),
    "bad-not-utf8.yml": ("(file)", "not UTF-8", "save the file as UTF-8"),
    "bad-timezone.yml": ("targets[0].timezone", "not a time zone this host knows",
                         "`timezone: UTC`"),
    "bad-timezone-type.yml": ("defaults.timezone", "not a time zone", "`timezone: server`"),
    "bad-outputs-root-relative.yml": ("outputs.roots[0].path", "not an absolute folder",
                                      "/mnt/ramdisk"),
    "bad-outputs-root-slash.yml": ("outputs.roots[0].path", "not an absolute folder below /",
                                   "name the folder the outputs are written under"),
    "bad-outputs-root-no-target.yml": ("outputs.roots[0].target", "names none",
                                       "add `target: NAME`"),
    "bad-outputs-root-url-credentials.yml": ("outputs.roots[0].url", "credentials",
                                             "password_file"),
    "bad-outputs-unknown-key.yml": ("outputs.roots[0].folder", "unknown key", "path"),
    "bad-outputs-playlist-name.yml": ("outputs.playlist_names[0]", "not a playlist file name",
                                      "bare file name"),
}


def test_every_bad_fixture_has_an_expectation() -> None:
    files = {p.name for p in CONFIGS.glob("bad-*.yml")}
    assert files == set(MISTAKES)


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_mistake_is_refused_with_file_key_and_fix(name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGMA_TEST_UNSET_PASSWORD", raising=False)
    key, problem, fix = MISTAKES[name]
    with pytest.raises(ConfigError) as caught:
        load_config(str(CONFIGS / name))
    message = str(caught.value)
    assert message.startswith(str(CONFIGS / name) + ": ")
    assert key in message
    assert problem in message
    assert "Fix: " in message and fix in message.split("Fix: ", 1)[1]


def test_valid_config_applies_defaults_and_overrides() -> None:
    config = load_config(str(CONFIGS / "valid.yml"))
    first, second = config.targets
    assert (first.name, first.interval, first.timeout, first.method) == \
        ("sigma-01", 10.0, 2.0, "POST")
    assert (second.interval, second.method, second.headers) == \
        (30.0, "GET", (("X-Site", "hanoi"),))
    assert second.jobs.include is not None and second.jobs.max == 10
    assert first.jobs.max == 500 and first.max_body_bytes == 8 * 1024 * 1024
    assert (first.timezone, second.timezone) == ("UTC", "Asia/Ho_Chi_Minh")


@pytest.mark.parametrize(("written", "kept"), [
    ("UTC", "UTC"), ("utc", "UTC"), ("server", "server"), ("Server", "server"),
    ("Europe/Berlin", "Europe/Berlin"), ("Etc/UTC", "Etc/UTC")])
def test_timezone_of_wall_times(tmp_path: pytest.TempPathFactory, written: str,
                                kept: str) -> None:
    path = tmp_path / "c.yml"  # type: ignore[operator]
    path.write_text(f"defaults:\n  timezone: {written}\ntargets:\n"
                    "  - url: http://127.0.0.1:1\n"
                    "  - url: http://127.0.0.1:2\n    timezone: UTC\n")
    inherited, own = load_config(str(path)).targets
    assert (inherited.timezone, own.timezone) == (kept, "UTC")


def test_secrets_from_file_and_env(tmp_path: pytest.TempPathFactory,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"  # type: ignore[operator]
    secret.write_text("s3cret\n")
    monkeypatch.setenv("SIGMA_TOKEN", "tok")
    path = tmp_path / "c.yml"  # type: ignore[operator]
    path.write_text(f"""targets:
  - name: a
    url: http://127.0.0.1:1
    auth: {{username: mon, password_file: {secret}}}
  - name: b
    url: http://127.0.0.1:2
    auth: {{bearer_token_env: SIGMA_TOKEN}}
""")
    a, b = load_config(str(path)).targets
    assert (a.auth.username, a.auth.password) == ("mon", "s3cret")
    assert b.auth.bearer_token == "tok"
    assert "s3cret" not in repr(a) and "tok" not in repr(b)


def test_target_flag_names_targets_by_host_port() -> None:
    config = config_from_urls(["http://127.0.0.1:9999", "https://sigma-02:9999/"])
    assert [t.name for t in config.targets] == ["127.0.0.1:9999", "sigma-02:9999"]


# --- names from the environment: one agent file for every host ------------------------


def _agent(text: str) -> str:
    return f"targets:\n  - name: {text}\n    url: http://127.0.0.1:9999\nnvml:\n  target: {text}\n"


def test_hostname_is_the_environments_else_the_kernels(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSTNAME", raising=False)
    config = parse_config(yaml.safe_load(_agent("${HOSTNAME}")), "agent.yml")
    assert config.targets[0].name == config.nvml.target == socket.gethostname()
    monkeypatch.setenv("HOSTNAME", "pod-7")  # containers set it
    config = parse_config(yaml.safe_load(_agent("sigma-${HOSTNAME}")), "agent.yml")
    assert config.targets[0].name == config.nvml.target == "sigma-pod-7"


def test_an_unset_variable_or_a_bare_dollar_is_refused_with_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    with pytest.raises(ConfigErrors) as caught:
        parse_config(yaml.safe_load(_agent("${NODE_NAME}")), "agent.yml")
    assert [e.key for e in caught.value.errors] == ["targets[0].name", "nvml.target"]
    assert str(caught.value.errors[0]).startswith(
        "agent.yml: targets[0].name: ${NODE_NAME}: the environment variable NODE_NAME is not "
        "set. Fix: set NODE_NAME in the exporter's environment")
    with pytest.raises(ConfigError) as bare:
        parse_config(yaml.safe_load(_agent("$HOSTNAME")), "agent.yml")
    assert bare.value.key == "targets[0].name"
    assert "`${HOSTNAME}` (with braces) is the host's name" in bare.value.fix
