#!/usr/bin/env python3
"""Split a sigma-exporter fleet config into N shards the way Prometheus does.

    python deploy/prometheus/shard.py --shards 2 fleet.yml OUTDIR

writes OUTDIR/sigma-shard-K.yml (K = 0..N-1), the exporter config of
replica K with the targets whose name Prometheus' `hashmod` puts in shard K,
and OUTDIR/sigma-targets.yml, a file_sd file listing every target name, for
the Prometheus servers of deploy/prometheus/sharded.yml. Shard K's Prometheus
keeps the names with `hashmod` = K and probes them on exporter replica K, so
every target is polled by one exporter and scraped by one Prometheus.

`hashmod` is Prometheus' relabel action: the MD5 of the source label values
(joined by ";"), its last 8 bytes read as a big-endian integer, modulo N.
Standard library and PyYAML only.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
from pathlib import Path
from typing import Any

import yaml


def hashmod(value: str, modulus: int) -> int:
    """Prometheus' relabel `hashmod` of one label value."""
    digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % modulus


def target_name(target: dict[str, Any]) -> str:
    if "name" not in target:
        raise SystemExit(f"shard.py: target {target.get('url')!r} has no name; "
                         "sharding needs explicit target names")
    return str(target["name"])


def split(config: dict[str, Any], shards: int) -> list[dict[str, Any]]:
    """One exporter config per shard; each keeps the rest of the file as is."""
    out = []
    for shard in range(shards):
        part = copy.deepcopy(config)
        part["targets"] = [t for t in config["targets"]
                           if hashmod(target_name(t), shards) == shard]
        nvml_target = (part.get("nvml") or {}).get("target")
        if nvml_target is not None and nvml_target not in {t["name"] for t in part["targets"]}:
            del part["nvml"]["target"]
        out.append(part)
    return out


def file_sd(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"targets": [target_name(t) for t in config["targets"]]}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, required=True, help="number of shards (N >= 1)")
    parser.add_argument("config", type=Path, help="the fleet's sigma-exporter config")
    parser.add_argument("outdir", type=Path)
    args = parser.parse_args(argv)
    if args.shards < 1:
        parser.error("--shards must be at least 1")
    config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or not isinstance(config.get("targets"), list):
        parser.error(f"{args.config}: no `targets:` list")
    args.outdir.mkdir(parents=True, exist_ok=True)
    for shard, part in enumerate(split(config, args.shards)):
        path = args.outdir / f"sigma-shard-{shard}.yml"
        header = (f"# Shard {shard} of {args.shards}, made by deploy/prometheus/shard.py "
                  f"from {args.config.name}.\n")
        if not part["targets"]:
            print(f"shard.py: shard {shard} has no target", file=sys.stderr)
        path.write_text(header + yaml.safe_dump(part, sort_keys=False), encoding="utf-8")
        print(f"{path}: {len(part['targets'])} target(s)")
    sd = args.outdir / "sigma-targets.yml"
    sd.write_text("# Every target name, for file_sd_configs in deploy/prometheus/sharded.yml.\n"
                  + yaml.safe_dump(file_sd(config), sort_keys=False), encoding="utf-8")
    print(f"{sd}: {len(config['targets'])} target name(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
