"""Session rules: the pure (no I/O) analytics of one class session, shared by every user.

The aggregator service runs them on the score topic, the gateway on its live history
(reports of a running session) and ``classpulse replay`` on a file or an event log, so
the three give the same figures. Modules import only ``shared/``:

* :mod:`~shared.analytics.config` - window sizes, lateness and alert thresholds;
* :mod:`~shared.analytics.session` - :class:`~shared.analytics.session.SessionAggregator`,
  one session's windows, participation figures and alerts;
* :mod:`~shared.analytics.state` - its per-session state (samples, buckets, participants);
* :mod:`~shared.analytics.windows` and :mod:`~shared.analytics.summary` - closed buckets to
  a window's ``ClassAggregate``, participants to the ``SessionSummary``;
* :mod:`~shared.analytics.alerts` - open alerts and their raised/cleared messages;
* :mod:`~shared.analytics.equity` - shares, Gini coefficient, percentiles;
* :mod:`~shared.analytics.snapshot` - an aggregator to JSON bytes and back;
* :mod:`~shared.analytics.timeline` - per-second timeline rows voted from score events.
"""
