"""The operator's settings are declared once (shell/config.py): each has a flag and a variable,
a flag given wins over the variable, the variable over the default, and every bad value is
named in one error."""

import argparse
from dataclasses import fields

import pytest

from memory_hygiene.shell import config


def parse(*argv):
    p = argparse.ArgumentParser()
    config.add_arguments(p)
    return p.parse_args(list(argv))


def test_every_setting_has_a_flag_and_a_variable_with_its_default_in_help():
    p = argparse.ArgumentParser()
    config.add_arguments(p)
    text = p.format_help().replace("\n", " ")
    for f in fields(config.Config):
        assert "--" + f.name.replace("_", "-") in text
        assert "$MEMORY_HYGIENE_" + f.name.upper() in text.replace(" ", "")


def test_defaults_when_nothing_is_given():
    assert config.load(parse(), environ={}) == config.Config()


def test_a_flag_wins_over_the_variable_which_wins_over_the_default():
    env = {"MEMORY_HYGIENE_EVENT_QPS": "7", "MEMORY_HYGIENE_STATUS_INTERVAL": "4", "MEMORY_HYGIENE_WATCH_LIST": "false",
           "MEMORY_HYGIENE_CHUNK_SIZE": ""}
    c = config.load(parse("--event-qps", "9", "--policy-reports"), environ=env)
    assert c.event_qps == 9.0, "the flag"
    assert c.status_interval == 4.0, "the variable"
    assert c.watch_list is False and c.policy_reports is True
    assert c.chunk_size == config.Config().chunk_size, "an empty variable is not set"
    assert config.load(parse("--watch-list"), environ=env).watch_list is True
    assert config.load(None, environ=env).event_qps == 7.0, "kopf run: the environment only"


def test_every_bad_value_is_named_at_once():
    env = {"MEMORY_HYGIENE_EVENT_BURST": "many", "MEMORY_HYGIENE_WATCH_LIST": "perhaps"}
    with pytest.raises(config.ConfigError) as err:
        config.load(parse("--status-interval", "-1", "--max-status-violations", "0"), environ=env)
    text = str(err.value)
    for name in ("MEMORY_HYGIENE_EVENT_BURST='many'", "MEMORY_HYGIENE_WATCH_LIST='perhaps'", "--status-interval -1",
                 "--max-status-violations 0"):
        assert name in text


def test_the_kubernetes_client_is_not_loaded_before_run_sets_kubeconfig():
    """kubernetes.config reads $KUBECONFIG once, when it is imported, and kopf's login uses that
    default: ``run --kubeconfig`` sets the variable, so nothing may load the client before."""
    import subprocess
    import sys

    code = ("import sys; from memory_hygiene import cli; cli.build_parser(); "
            "print('kubernetes.config.kube_config' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
