"""The development cluster: a local control plane (``localcluster``), a real single-node
cluster (``realnode``), the project's image without Docker (``image``) and simulators (``sim``).

For tests, ``scripts/demo``, ``bench/`` and ``tests/tools/``; not part of the operator's package
(see README.md here).
"""
