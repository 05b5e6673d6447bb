"""The local control plane's pure helpers (the e2e suite relies on them to know what to expect)."""

import pytest

from devcluster import localcluster


@pytest.mark.parametrize("version, served", [
    ("3.4.23", False), ("3.4.30", False), ("3.4.31", True), ("3.5.0", False), ("3.5.12", False),
    ("3.5.13", True), ("v3.6.16", True), ("3.6.0", True),
])
def test_watch_list_needs_request_watch_progress(version, served):
    assert localcluster.watch_list_served(version) is served


def test_the_built_etcd_version_comes_from_its_go_mod():
    # (devcluster/README.md and docs/benchmarks.md name it too: bump them together)
    assert localcluster.built_etcd_version() == "v3.6.16"
    with pytest.raises(localcluster.LocalClusterError):
        localcluster.watch_list_served("unknown")
