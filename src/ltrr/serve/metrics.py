"""Prometheus metrics of one server, in its own registry (``GET /metrics``)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (.001, .0025, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .25, .5, 1,
                   2.5, 5, 10)
ENDPOINTS = ("/search", "/feedback", "/health", "/metrics", "/admin/reload", "other")


class Metrics:
    """Counters, gauges and histograms of the server; :meth:`render` is the exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, caches: Callable[[], dict] | None = None) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        if caches is not None:
            r.register(_CacheCollector(caches))
        self.requests = Counter("ltrr_http_requests", "HTTP requests answered, by endpoint "
                                "and status code.", ["endpoint", "status"], registry=r)
        self.latency = Histogram("ltrr_http_request_seconds", "Time from a request's arrival "
                                 "to its response, by endpoint.", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("ltrr_batch_size", "Queries per Pipeline.run_batch call.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.batch_seconds = Histogram("ltrr_batch_seconds", "Duration of Pipeline.run_batch "
                                       "calls.", buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("ltrr_queue_seconds", "Time a query waited for its "
                                       "batch to start.", buckets=LATENCY_BUCKETS, registry=r)
        self.arms_dropped = Counter("ltrr_arms_dropped", "Arms left out of a search's answer, "
                                    "by node and reason (deadline, failed).",
                                    ["node", "reason"], registry=r)
        self.searches_degraded = Counter("ltrr_searches_degraded", "Searches answered without "
                                         "one or more of their arms (see ltrr_arms_dropped).",
                                         registry=r)
        self.events_received = Counter("ltrr_feedback_events_received", "Feedback events "
                                       "received in valid requests.", registry=r)
        self.events_new = Counter("ltrr_feedback_events_new", "Feedback events logged (not "
                                  "seen before).", registry=r)
        self.learner_runs = Counter("ltrr_learner_runs", "Background learning runs, by result.",
                                    ["result"], registry=r)
        self.learner_seconds = Histogram("ltrr_learner_seconds", "Duration of learning runs.",
                                         buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60),
                                         registry=r)
        self.learner_lag = Gauge("ltrr_learner_lag_events", "Events logged but not yet "
                                 "learned from.", registry=r)
        self.reloads = Counter("ltrr_reloads", "Pipeline reloads, by result (ok, refused).",
                               ["result"], registry=r)
        self.generation = Gauge("ltrr_pipeline_generation", "Generation of the live pipeline "
                                "(1 at start, +1 per reload).", registry=r)
        self.inflight = Gauge("ltrr_search_inflight", "Search requests being answered.",
                              registry=r)
        self.connections_closed = Counter(
            "ltrr_connections_closed", "Connections closed or refused by the server's limits, "
            "by reason (evicted, header_timeout, body_timeout, send_timeout, header_too_large, "
            "refused).",
            ["reason"], registry=r)
        self.connections_open = Gauge("ltrr_connections_open", "Open client connections.",
                                      registry=r)
        # bound children, so the hot path does no label lookups
        self._latency = {e: self.latency.labels(e) for e in ENDPOINTS}
        self._requests: dict[tuple[str, int], Counter] = {}

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        child = self._requests.get((endpoint, status))
        if child is None:
            child = self._requests[(endpoint, status)] = self.requests.labels(
                endpoint, str(status))
        child.inc()
        self._latency[endpoint].observe(seconds)

    def connection_closed(self, reason: str) -> None:
        self.connections_closed.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CacheCollector:
    """The live pipeline's result caches (``cache:`` in the spec), read at scrape time;
    the counts restart at a reload, which gives a new pipeline."""

    def __init__(self, caches: Callable[[], dict]):
        self.caches = caches

    def describe(self):
        return []

    def collect(self):
        hits = CounterMetricFamily("ltrr_cache_hits", "Result cache hits, by node.", labels=["node"])
        misses = CounterMetricFamily("ltrr_cache_misses", "Result cache misses, by node.",
                                     labels=["node"])
        entries = GaugeMetricFamily("ltrr_cache_entries", "Entries held in a node's result "
                                    "cache.", labels=["node"])
        for node, cache in self.caches().items():
            hits.add_metric([node], cache.hits)
            misses.add_metric([node], cache.misses)
            entries.add_metric([node], len(cache))
        yield from (hits, misses, entries)
