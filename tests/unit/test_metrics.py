"""Metrics that need more than a prometheus_client call."""


def test_watch_restarts_are_counted_from_kopfs_debug_log(caplog):
    import logging

    from memory_hygiene.shell import metrics

    metrics.count_watch_restarts(show_debug=False)
    log = logging.getLogger("kopf._cogs.clients.watching")
    before = metrics.WATCH_RESTARTS.labels(resource="pods.v1")._value.get()
    with caplog.at_level(logging.DEBUG):
        log.debug("Restarting the watch-stream for pods.v1 cluster-wide.")
        log.debug("Watch-stream for pods.v1 cluster-wide is inactive, reconnecting.")
        log.debug("Starting the watch-stream for pods.v1 cluster-wide.")
    assert metrics.WATCH_RESTARTS.labels(resource="pods.v1")._value.get() - before == 2
    assert not [r for r in caplog.records if r.levelno == logging.DEBUG], "debug lines stay hidden"
