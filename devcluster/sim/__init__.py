"""Simulators for the e2e tests and the demo: kubelet and node-problem-detector played through the
API (``kube``, ``load``), and real kernel OOM kills in kubelet-shaped memory cgroups (``kernel_oom``)."""
