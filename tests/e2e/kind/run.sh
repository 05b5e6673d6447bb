#!/usr/bin/env bash
# The e2e suite against a kind cluster, for contributors with Docker (it cannot run on machines
# without a Docker engine; there, scripts/test uses a local kube-apiserver + etcd instead).
#
#   tests/e2e/kind/run.sh                       create a cluster, run tests/e2e, delete the cluster
#   MEMORY_HYGIENE_IMAGE=img:tag tests/e2e/kind/run.sh
#                                               also load the image, deploy manifests/ with it and
#                                               wait for the operator to be Ready, before the suite
#   KEEP_CLUSTER=1 ...                          keep the cluster afterwards
#
# The suite plays kubelet and node-problem-detector itself: it registers Node objects that no
# kubelet backs. kind's node lifecycle controller marks them NotReady after ~40 s and its taint
# manager would evict their pods after 300 s; every test finishes well within that.
set -euo pipefail
cd "$(dirname "$0")/../../.."
command -v kind >/dev/null || { echo "kind is not installed: https://kind.sigs.k8s.io/" >&2; exit 1; }
command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "no Docker engine" >&2; exit 1; }

name="${KIND_CLUSTER_NAME:-memory-hygiene-e2e}"
kubeconfig="$(mktemp -d)/kubeconfig"
kind create cluster --name "$name" --config tests/e2e/kind/kind-config.yaml --kubeconfig "$kubeconfig" --wait 180s
if [ -z "${KEEP_CLUSTER:-}" ]; then
  trap 'kind delete cluster --name "$name"' EXIT
fi
export KUBECONFIG="$kubeconfig"

if [ -n "${MEMORY_HYGIENE_IMAGE:-}" ]; then
  kind load docker-image --name "$name" "$MEMORY_HYGIENE_IMAGE"
  workdir="$(mktemp -d)"
  cp -r manifests "$workdir/"
  (cd "$workdir/manifests" && kubectl kustomize . >/dev/null &&
   sed -i "s|image: .*memory-hygiene.*|image: $MEMORY_HYGIENE_IMAGE|" base/deployment.yaml)
  kubectl apply -k "$workdir/manifests"
  kubectl -n memory-hygiene rollout status deployment/memory-hygiene --timeout=180s
  # The suite runs its own operator process; the deployed one must not race it.
  kubectl -n memory-hygiene scale deployment/memory-hygiene --replicas=0
fi

MEMORY_HYGIENE_E2E_KUBECONFIG="$kubeconfig" scripts/test tests/e2e "$@"
