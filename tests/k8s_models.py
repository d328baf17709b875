"""Prometheus Operator objects checked against the operator's real API models.

The models are those of the npm package @kubernetes-models/prometheus-operator
(generated from the operator's Go API types, the source of its CRD schemas),
installed by `npm ci --prefix tests/k8s` (.ci/run does it). Two checks:

* the package's own validators (types, enums, patterns, required fields),
  run by node (tests/k8s/validate.mjs);
* unknown fields, which those validators let through but which the API
  server drops or refuses: every key of an object must be a property of the
  model's class, read from the package's TypeScript declarations.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

K8S_TESTS = ROOT / "tests" / "k8s"
PACKAGE = K8S_TESTS / "node_modules" / "@kubernetes-models" / "prometheus-operator"
GROUP = "monitoring.coreos.com"


def _package() -> Path:
    if not (PACKAGE / "package.json").is_file():
        pytest.fail("the Prometheus Operator models are not installed: "
                    "npm ci --prefix tests/k8s (.ci/run does it)")
    return PACKAGE


def package_version() -> str:
    version: str = json.loads((_package() / "package.json").read_text())["version"]
    return version


@functools.cache
def _declarations(path: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """Properties (name -> TypeScript type) of the model class declared in `path`,
    and the local declaration file of each interface it imports."""
    text = path.read_text()
    imports: dict[str, Path] = {}
    for names, module in re.findall(r'^import \{ ([^}]+) \} from "(\./[^"]+)\.js";', text, re.M):
        for name in names.split(","):
            imports[name.strip()] = path.parent / f"{module[2:]}.d.ts"
    body = text[text.index("export declare class"):]
    body = body[body.index("{") + 1:body.index("constructor(")]
    props = dict(re.findall(r'^    "([^"]+)"\??: (.+?);?$', body, re.M))
    return props, imports


def unknown_fields(doc: dict[str, Any]) -> list[str]:
    """Paths of the keys of `doc` that its model does not have."""
    group, _, version = doc["apiVersion"].partition("/")
    assert group == GROUP, doc["apiVersion"]
    path = _package() / group / version / f"{doc['kind']}.d.ts"
    assert path.is_file(), f"no model for {doc['apiVersion']} {doc['kind']}"
    return _walk(doc, path, doc["kind"])


def _walk(obj: dict[str, Any], path: Path, where: str) -> list[str]:
    props, imports = _declarations(path)
    found = []
    for key, value in obj.items():
        if key not in props:
            found.append(f"{where}.{key}")
            continue
        type_ = props[key]
        array = re.fullmatch(r"Array<(\w+)>", type_)
        name = array.group(1) if array else type_
        if name not in imports:  # a scalar, a map, or a Kubernetes core type
            continue
        items = value if array and isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, dict):
                found += _walk(item, imports[name],
                               f"{where}.{key}[{i}]" if array else f"{where}.{key}")
    return found


def validation_errors(docs: list[dict[str, Any]]) -> list[str | None]:
    """The package's own validation of each object: None when it passes."""
    _package()
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (Debian: apt-get install nodejs npm; .ci/run does)")
    result = subprocess.run([node, str(K8S_TESTS / "validate.mjs")], cwd=K8S_TESTS,
                            input="".join(json.dumps(d) + "\n" for d in docs),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == len(docs), result.stdout + result.stderr
    return [None if a["ok"] else a["error"] for a in answers]
