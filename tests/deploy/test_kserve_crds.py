"""kserve/crds/: the copied KServe CRDs are exactly the upstream files their SOURCE.md names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.deploy_support import (
    CANARY_RELEASE,
    CRD_DIR,
    CRD_FILES,
    CRD_ROOT,
    KSERVE,
    OLDEST_RELEASE,
    git_blob_sha1,
)

COPIES = sorted(p for p in (KSERVE / "crds").iterdir() if p.is_dir())
# A SOURCE.md table row: | file.yaml | ... | <git blob sha1> | <bytes> |
ROW = re.compile(r"^\|\s*(\S+\.yaml)\s*\|.*\|\s*([0-9a-f]{40})\s*\|\s*(\d+)\s*\|\s*$", re.MULTILINE)


def test_the_copies_are_the_versions_the_tests_expect() -> None:
    assert [p.name for p in COPIES] == [OLDEST_RELEASE, CANARY_RELEASE] == ["v0.16.0", "v0.20.0"]
    assert CRD_DIR in COPIES
    for release in (OLDEST_RELEASE, CANARY_RELEASE):
        assert all((CRD_ROOT / release / f).is_file() for f in CRD_FILES.values()), release


@pytest.mark.parametrize("copy", COPIES, ids=lambda p: p.name)
def test_each_copy_matches_the_blob_hashes_in_its_source_md(copy: Path) -> None:
    source = (copy / "SOURCE.md").read_text()
    # The provenance a reader needs to fetch the same files again.
    assert re.search(rf"tag `{re.escape(copy.name)}` = commit `[0-9a-f]{{40}}`", source)
    listed = {name: (blob, int(size)) for name, blob, size in ROW.findall(source)}
    assert set(listed) == {p.name for p in copy.glob("*.yaml")}, "SOURCE.md and the folder list other files"
    for name, (blob, size) in listed.items():
        data = (copy / name).read_bytes()
        digest = (git_blob_sha1(data), len(data))
        assert digest == (blob, size), f"{copy.name}/{name} is not the upstream file"


def test_git_blob_sha1_is_what_git_hash_object_prints() -> None:
    # Known value: `printf 'hello\n' | git hash-object --stdin`.
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
