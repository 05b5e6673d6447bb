"""The e2e cluster itself works: a real API server with authentication and RBAC."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.e2e


def test_server_version(kubectl):
    proc = kubectl("version", "-o", "json", check=True)
    info = json.loads(proc.stdout)
    server = info["serverVersion"]
    assert server["major"] == "1", server
    assert server["gitVersion"].startswith("v1."), server


def test_default_namespace_exists(kubectl):
    for ns in ("default", "kube-system"):
        proc = kubectl("get", "ns", ns, "-o", "jsonpath={.status.phase}")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "Active"


def test_create_configmap(kubectl, unique_name):
    name = unique_name("smoke")
    proc = kubectl("create", "configmap", name, "-n", "default", "--from-literal=answer=42")
    assert proc.returncode == 0, proc.stderr
    proc = kubectl("get", "configmap", name, "-n", "default", "-o", "jsonpath={.data.answer}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "42"
    assert kubectl("delete", "configmap", name, "-n", "default").returncode == 0


def test_rbac_denies_unbound_service_account(cluster, kubectl, unique_name):
    ns = unique_name("smoke-rbac")
    sa_kubeconfig = cluster.service_account_kubeconfig(ns, "nobody")

    # Authenticated (so the token works) ...
    who = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}",
                  kubeconfig=sa_kubeconfig)
    assert who.returncode == 0, who.stderr
    assert who.stdout == f"system:serviceaccount:{ns}:nobody"

    # ... but not authorized: no (Cluster)RoleBinding grants it anything.
    denied = kubectl("get", "pods", "-n", ns, kubeconfig=sa_kubeconfig)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr and "cannot list resource \"pods\"" in denied.stderr

    # The same request as admin succeeds.
    assert kubectl("get", "pods", "-n", ns).returncode == 0

    # A RoleBinding lets it in (RBAC really is evaluated, not just "deny all").
    assert kubectl("create", "role", "pod-reader", "-n", ns, "--verb=list",
                   "--resource=pods").returncode == 0
    assert kubectl("create", "rolebinding", "pod-reader", "-n", ns, "--role=pod-reader",
                   f"--serviceaccount={ns}:nobody").returncode == 0
    deadline = time.monotonic() + 30  # the RBAC authorizer's informer catches up quickly
    while True:
        allowed = kubectl("get", "pods", "-n", ns, kubeconfig=sa_kubeconfig)
        if allowed.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert allowed.returncode == 0, allowed.stderr


def test_python_client_with_admin_kubeconfig(cluster):
    import kubernetes  # a project dependency: missing -> error, not skip

    api_client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        names = {ns.metadata.name
                 for ns in kubernetes.client.CoreV1Api(api_client).list_namespace().items}
    finally:
        api_client.close()
    assert {"default", "kube-system"} <= names
