"""The ``memory-hygiene`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

from . import __version__

EXIT_OK, EXIT_VIOLATIONS, EXIT_BAD_INPUT = 0, 1, 2


def _audit(args: argparse.Namespace) -> int:
    from .core.policy import PolicyError, parse_spec, policy_from_manifest
    from .core.engine import evaluate
    from .core.snapshot import parse_time
    from .inputs import InputError, load_files, load_live, load_policy
    from .report_table import render

    try:
        if args.policy:
            try:
                name, spec = policy_from_manifest(load_policy(args.policy))
            except PolicyError as err:
                raise InputError(f"{args.policy}: {err}") from None
        else:
            name, spec = "default", parse_spec({})
        snap = load_files(args.file) if args.file else load_live(args.kubeconfig, args.context)
        if args.now:
            try:
                now = parse_time(args.now)
            except ValueError:
                now = None
            if now is None:
                raise InputError(f"--now: not an RFC 3339 time: {args.now!r}")
        elif args.file and snap.newest_time is not None:
            # A snapshot shows what kubelet had reported when it was taken: its kills are judged
            # as settled (rules.SETTLE_SECONDS after the newest of its times).
            from .core.rules import SETTLE_SECONDS

            now = snap.newest_time + SETTLE_SECONDS
        else:
            now = time.time()
    except InputError as err:
        print(f"memory-hygiene audit: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT

    report = evaluate(name, spec, snap.nodes, snap.pods, snap.events, now, snap.namespaces)
    for ev in report.unparsed_events:
        logging.getLogger("memory_hygiene").warning(
            "skipped %s event %s on node %s: no kernel OOM line in its message %r",
            ev.reason, ev.uid, ev.node, ev.message[:200],
        )
    for sk in report.skipped:
        what = f"{sk.event.reason} event {sk.event.namespace}/{sk.event.name or sk.event.uid}" if sk.event else "OOM incidents"
        logging.getLogger("memory_hygiene").warning("%s on node %s: %s (%s)", what, sk.node, sk.detail, sk.cause)
    if args.output == "json":
        json.dump(report.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(report))
    return EXIT_VIOLATIONS if report.violations else EXIT_OK


def _crd(args: argparse.Namespace) -> int:
    from .crd import crd_yaml, reference_markdown

    sys.stdout.write(reference_markdown() if args.reference else crd_yaml())
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from .shell.main import run

    return run(args)


def _node_agent(args: argparse.Namespace) -> int:
    from .shell.node_agent import run

    return run(args)


def build_parser(prog: str = "memory-hygiene") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Keeps Kubernetes memory honest: overcommitted nodes, silent OOM kills, missing requests.",
    )
    parser.add_argument("--version", action="version", version=f"memory-hygiene {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    audit = sub.add_parser(
        "audit",
        help="evaluate a MemoryPolicy once, over snapshot files or the live cluster",
        description="Evaluate a MemoryPolicy once and print the report. Exit status: 0 no violations, "
        "1 violations found, 2 bad input or usage.",
    )
    audit.add_argument(
        "-f", "--file", action="append", metavar="FILE",
        help="Kubernetes objects (YAML or JSON; a v1 List as `kubectl get namespaces,nodes,pods,events -A "
        "-o yaml` writes, or a multi-document stream); repeatable; - reads stdin. Without -f: the live "
        "cluster of the kubeconfig.",
    )
    audit.add_argument("--policy", metavar="FILE", help="a MemoryPolicy manifest (default: an empty spec)")
    audit.add_argument("-o", "--output", choices=["table", "json"], default="table", help="output format")
    audit.add_argument(
        "--now", metavar="TIME",
        help="evaluate as of this RFC 3339 time (default: for files, 10 s after the newest timestamp in them, "
        "so that their OOM kills are judged; for the live cluster, now); OOM events older than the policy's "
        "lookback are left out, and a kill less than 10 s old is pending (not judged silent yet)",
    )
    audit.add_argument("--kubeconfig", help="kubeconfig file for the live cluster (default: $KUBECONFIG)")
    audit.add_argument("--context", help="kubeconfig context")
    audit.set_defaults(func=_audit)

    crd = sub.add_parser("crd", help="print the MemoryPolicy CustomResourceDefinition (YAML)")
    crd.add_argument("--reference", action="store_true", help="print the field reference (Markdown) instead")
    crd.set_defaults(func=_crd)

    run = sub.add_parser(
        "run",
        help="run the operator (watches Pods, Nodes and OOM Events; reconciles MemoryPolicies)",
        description="Run the operator against the cluster of the kubeconfig (or in-cluster).",
        epilog="Every setting above can also come from its environment variable (a flag given wins). "
        "Also: POD_NAME (reportingInstance of the Events; default: the hostname), POD_NAMESPACE (the "
        "operator's namespace, which admission policies leave out; default: the service account's, else "
        "memory-hygiene). Also runnable as `kopf run -m memory_hygiene.shell.operator --all-namespaces` "
        "(then without the HTTP endpoints, and with the settings from the environment only).",
    )
    from .shell.config import add_arguments as add_run_arguments

    add_run_arguments(run)
    run.set_defaults(func=_run)

    agent = sub.add_parser(
        "node-agent",
        help="run the node agent (a DaemonSet): post the kernel's OOM kill reports as OOMKilling Node Events",
        description="Follow the kernel log (/dev/kmsg) and the memory cgroups' oom_kill counters of one node, "
        "and post one OOMKilling Event (node-problem-detector's format, with the kernel's oom-kill: line) per "
        "kill, in namespace default, about the Node. Names from the boot id and the kernel record's sequence "
        "number: nothing is posted twice, across restarts too.",
    )
    from .shell.node_agent import add_arguments

    add_arguments(agent)
    agent.set_defaults(func=_node_agent)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "memory-hygiene") -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    return int(args.func(args))


def kubectl_plugin() -> int:
    """``kubectl-memory_hygiene``: the same CLI as a kubectl plugin, ``kubectl memory-hygiene audit ...``
    (kubectl runs ``kubectl-memory_hygiene`` from PATH for ``kubectl memory-hygiene``; the
    plugin gets kubectl's environment, so ``$KUBECONFIG`` is the same cluster)."""
    return main(prog="kubectl memory-hygiene")


if __name__ == "__main__":
    sys.exit(main())
