"""A release: scripts/release's folder and its checksums, and one version everywhere.

The script runs with the session's .deb (scripts/build-deb, the `built_deb`
fixture) and image (the `image` fixture of tests/containers.py), as its
--deb and --image allow, so it builds the wheel, the sdist and the SBOM and
saves the image, which no faster test does: the artefacts a user downloads,
their SHA256SUMS, and the SBOM against the CycloneDX schema and the lock.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from containers import Podman
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

import sigma_exporter
from sigma_exporter.buildinfo import git_revision

pytestmark = pytest.mark.e2e

VERSION = sigma_exporter.__version__
ARTEFACTS = (f"sigma_exporter-{VERSION}-py3-none-any.whl", f"sigma_exporter-{VERSION}.tar.gz",
             f"sigma-exporter_{VERSION}_amd64.deb", f"sigma-exporter-{VERSION}.image.tar",
             f"sigma-exporter-{VERSION}.cdx.json")


def _lock() -> dict[str, tuple[str, set[str]]]:
    """deploy/docker/requirements.txt: name -> (version, sha256 hashes)."""
    out: dict[str, tuple[str, set[str]]] = {}
    name = ""
    for line in (ROOT / "deploy/docker/requirements.txt").read_text().splitlines():
        pinned = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if pinned:
            name = pinned.group(1).lower().replace("_", "-").replace(".", "-")
            out[name] = (pinned.group(2), set())
        for digest in re.findall(r"--hash=sha256:([0-9a-f]{64})", line):
            out[name][1].add(digest)
    return out


@pytest.fixture(scope="module")
def release(built_deb: Path, image: str, podman: Podman,
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release") / "out"
    result = subprocess.run([str(ROOT / "scripts" / "release"), "--out", str(out),
                             "--deb", str(built_deb), "--image", image],
                            capture_output=True, text=True, timeout=900, env=podman.env,
                            check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert Path(result.stdout.strip().splitlines()[-1]) == out
    return out


def test_release_folder_holds_every_artefact_and_their_checksums(release: Path) -> None:
    assert sorted(p.name for p in release.iterdir()) == sorted([*ARTEFACTS, "SHA256SUMS"])
    check = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=release,
                           capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(check.stdout.splitlines()) == sorted(f"{name}: OK" for name in ARTEFACTS)
    # One byte changed in an artefact: the check says so.
    sbom = release / ARTEFACTS[-1]
    original = sbom.read_bytes()
    try:
        sbom.write_bytes(original + b" ")
        check = subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"],
                               cwd=release, capture_output=True, text=True, timeout=120,
                               check=False)
        assert check.returncode == 1 and f"{sbom.name}: FAILED" in check.stdout
    finally:
        sbom.write_bytes(original)


def test_release_wheel_and_sdist_carry_the_version_and_revision(release: Path) -> None:
    revision = git_revision(ROOT)
    assert revision is not None
    with zipfile.ZipFile(release / ARTEFACTS[0]) as wheel:
        baked = wheel.read("sigma_exporter/_build.py").decode()
        metadata = wheel.read(f"sigma_exporter-{VERSION}.dist-info/METADATA").decode()
    assert f'REVISION = "{revision}"' in baked
    assert f"\nVersion: {VERSION}\n" in metadata
    with tarfile.open(release / ARTEFACTS[1]) as sdist:
        assert f"sigma_exporter-{VERSION}/sigma_exporter/_build.py" in sdist.getnames()


def test_release_image_archive_loads_as_the_image(release: Path, image: str) -> None:
    with tarfile.open(release / ARTEFACTS[3]) as archive:
        manifest_file = archive.extractfile("manifest.json")
        assert manifest_file is not None
        manifest = json.load(manifest_file)
    (entry,) = manifest
    assert any(tag.endswith(image.split("/")[-1]) for tag in entry["RepoTags"]), entry


def test_release_sbom_is_valid_cyclonedx_and_lists_the_lock(release: Path) -> None:
    text = (release / ARTEFACTS[4]).read_text()
    problem = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    assert problem is None, str(problem)[:2000]
    bom = json.loads(text)
    assert bom["metadata"]["component"]["name"] == "sigma-exporter"
    assert bom["metadata"]["component"]["version"] == VERSION
    lock = _lock()
    listed = {}
    for component in bom["components"]:
        hashes = {h["content"] for ref in component.get("externalReferences", [])
                  for h in ref.get("hashes", []) if h["alg"] == "SHA-256"}
        listed[component["name"].lower().replace("_", "-").replace(".", "-")] = (
            component["version"], hashes)
        assert component["purl"] == f"pkg:pypi/{component['name']}@{component['version']}"
    assert listed == lock


def test_one_version_in_code_changelog_readme_deb_and_links() -> None:
    """The version of sigma_exporter/__init__.py is the changelog's newest, the one the
    README and the docs install, and the tag the alerts' runbook links point at."""
    changelog = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[([^\]]+)\]", changelog, re.M)
    assert versions[0] == VERSION, versions
    assert versions[-1] == "0.1.0"
    links = yaml.safe_load((ROOT / "alerts" / "links.yml").read_text())
    assert f"/blob/v{VERSION}/" in links["runbooks"]
    readme = (ROOT / "README.md").read_text()
    assert f"sigma-exporter_{VERSION}_amd64.deb" in (ROOT / "docs/deployment.md").read_text()
    assert VERSION in readme and "CHANGELOG.md" in readme
    assert (ROOT / "SECURITY.md").is_file() and "SECURITY.md" in readme
