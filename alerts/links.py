#!/usr/bin/env python3
"""Point every alert's runbook_url and dashboard_url at your own sites.

    python3 alerts/links.py --out DIR --runbooks URL --grafana URL
    python3 alerts/links.py --runbooks URL [--grafana URL]
    python3 alerts/links.py --check      # exit 1 if a link does not use alerts/links.yml

With --out, the two rule files are written into DIR (next to your
prometheus.yml) with your links, and the checkout is left as it is: the
README's way. Without it, the bases are changed where they live, in
alerts/links.yml, alerts/sigma-alerts.yml and the rule unit tests
(alerts/tests/, whose expected annotations name the links), and the
Kubernetes PrometheusRule is regenerated: the way for a fork that ships its
own rules. Only the base part of each link changes; anchors, dashboard paths
and query strings stay.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
LINKS = HERE / "links.yml"
RULES = HERE / "sigma-alerts.yml"
RECORDING = HERE / "sigma-recording.yml"
TESTS = sorted(HERE.glob("tests/**/*.yml"))
GENERATE = HERE.parent / "deploy" / "kubernetes" / "generate.py"
_URL = re.compile(r"^(\s*(?:runbook_url|dashboard_url): )(\S+?)((?:#|/d/).*?)\s*$")


def load() -> dict[str, str]:
    data = yaml.safe_load(LINKS.read_text(encoding="utf-8"))
    return {"runbooks": str(data["runbooks"]).rstrip("/"),
            "grafana": str(data["grafana"]).rstrip("/")}


def rewrite(text: str, links: dict[str, str]) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        m = _URL.match(line.rstrip("\n"))
        if m:
            head, _, tail = m.groups()
            base = links["runbooks"] if head.strip().startswith("runbook_url") else links["grafana"]
            line = f"{head}{base}{tail}\n"
        out.append(line)
    return "".join(out)


def stale_files(links: dict[str, str]) -> list[Path]:
    return [p for p in (RULES, *TESTS)
            if rewrite(p.read_text(encoding="utf-8"), links) != p.read_text(encoding="utf-8")]


def problem(key: str, url: str) -> str | None:
    """Why `url` cannot be the base of the `key` links, or None."""
    if not re.match(r"^https?://[^/\s]+", url):
        return f"--{key} {url!r}: not an http(s) URL"
    if key == "runbooks" and "#" in url:
        return f"--runbooks {url!r}: give the page without the #anchor (each alert adds its own)"
    if key == "grafana" and "/d/" in url:
        return f"--grafana {url!r}: give Grafana's base URL, without /d/... (each alert adds it)"
    return None


def write_rules(out: Path, links: dict[str, str]) -> list[Path]:
    """The recording rules as they are and the alerts with `links`, written into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / RECORDING.name, out / RULES.name]
    written[0].write_text(RECORDING.read_text(encoding="utf-8"), encoding="utf-8")
    written[1].write_text(rewrite(RULES.read_text(encoding="utf-8"), links), encoding="utf-8")
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runbooks", help="base URL of docs/runbooks.md (no #anchor)")
    parser.add_argument("--grafana", help="base URL of Grafana (no /d/...)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write sigma-recording.yml and sigma-alerts.yml into DIR with "
                             "these links, changing nothing in the checkout")
    parser.add_argument("--check", action="store_true",
                        help="only check that every link uses alerts/links.yml")
    args = parser.parse_args(argv)
    links = load()
    if args.check:
        stale = stale_files(links)
        for p in stale:
            print(f"{p}: links do not match {LINKS}", file=sys.stderr)
        return 1 if stale else 0
    for key in ("runbooks", "grafana"):
        value = getattr(args, key)
        if value:
            why = problem(key, value)
            if why is not None:
                parser.error(why)
            links[key] = value.rstrip("/")
    if args.out is not None:
        for path in write_rules(args.out, links):
            print(f"wrote {path}")
        print(f"links: runbooks {links['runbooks']}#<alert>, grafana {links['grafana']}/d/...")
        print("List both files under rule_files: in prometheus.yml, then reload Prometheus.")
        return 0
    LINKS.write_text(re.sub(r"(?m)^(runbooks|grafana): .*$",
                            lambda m: f"{m.group(1)}: {links[m.group(1)]}",
                            LINKS.read_text(encoding="utf-8")), encoding="utf-8")
    for path in (RULES, *TESTS):
        path.write_text(rewrite(path.read_text(encoding="utf-8"), links), encoding="utf-8")
    subprocess.run([sys.executable, str(GENERATE)], check=True)  # noqa: S603 - our own script
    print(f"links now: runbooks {links['runbooks']}, grafana {links['grafana']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
