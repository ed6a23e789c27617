"""Prometheus metrics, served on `metrics_port` when it is set (off by default).

An aio interceptor of our own counts calls by method and status code, times them, counts
the outcomes of unary and batch answers, and tracks calls in flight; a collector reads
the server's own counters (operations in flight, shed, refused per token for its rate,
watch subscribers, the journal's last seq) only when scraped, so they cost nothing on the
hot path. Each Server has its own registry, so tests may run several servers in one
process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from stockgate.v1 import reservations_pb2, types_pb2

OUR_METHODS_PREFIX = "/stockgate.v1."  # health and reflection are not measured
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0)
OUTCOME_NAMES = {v: k.removeprefix("OUTCOME_") for k, v in types_pb2.Outcome.items()}


class Metrics:
    """The metrics of one server and the interceptor that feeds them."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.handled = Counter("stockgate_grpc_server_handled_total",
                               "gRPC calls finished, by method and status code",
                               ["grpc_method", "grpc_code"], registry=self.registry)
        self.seconds = Histogram("stockgate_grpc_server_handling_seconds",
                                 "time from the handler's start to its answer",
                                 ["grpc_method"], buckets=LATENCY_BUCKETS_S,
                                 registry=self.registry)
        self.in_flight = Gauge("stockgate_grpc_server_calls_in_flight",
                               "gRPC calls being handled", registry=self.registry)
        self.outcomes = Counter("stockgate_reservation_outcomes_total",
                                "outcomes of unary and batch reservation calls",
                                ["outcome"], registry=self.registry)
        self.registry.register(_StateCollector(state))
        self.interceptor = _Interceptor(self)
        self._http = None

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics over HTTP on host:port, from a thread of its own."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)

    @property
    def port(self) -> int | None:
        """The port /metrics is served on, once serving."""
        return None if self._http is None else self._http.server_port

    def close(self) -> None:
        """Stop serving /metrics. Idempotent."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def _outcome(self, response: Any) -> None:
        if isinstance(response, types_pb2.Result):
            self.outcomes.labels(OUTCOME_NAMES[response.outcome]).inc()
        elif isinstance(response, reservations_pb2.BatchResponse):
            for r in response.results:
                self.outcomes.labels(OUTCOME_NAMES[r.outcome]).inc()


class _StateCollector(Collector):
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state

    def describe(self) -> list[Any]:
        return []  # registering must not read the server's state before it exists

    def collect(self) -> Iterator[Any]:
        s = self._state()
        yield GaugeMetricFamily("stockgate_operations_in_flight",
                                "operations admitted and not answered yet", s["ops"])
        yield GaugeMetricFamily("stockgate_operations_limit",
                                "the in-flight bound now (it follows the answering rate: "
                                "see queue_ms)", s["ops_limit"])
        yield CounterMetricFamily("stockgate_operations_shed",
                                  "operations refused past the in-flight bound", s["shed"])
        yield GaugeMetricFamily("stockgate_watch_subscribers", "Watch streams open",
                                s["watchers"])
        yield CounterMetricFamily("stockgate_session_messages",
                                  "Session request messages read", s["session_messages"])
        yield GaugeMetricFamily("stockgate_journal_last_seq",
                                "the newest journal sequence number decided", s["last_seq"])
        limited = CounterMetricFamily("stockgate_operations_rate_limited",
                                      "operations refused past their token's rate, by token "
                                      "name", labels=["token"])
        for name, n in s["rate_refused"].items():
            limited.add_metric([name], n)
        yield limited


class _Interceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        method = details.method
        if handler is None or not method.startswith(OUR_METHODS_PREFIX):
            return handler
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = self._wrapped[method] = self._wrap(handler, method.rsplit("/", 1)[1])
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, name: str) -> grpc.RpcMethodHandler:
        m = self._m
        handled, seconds = m.handled, m.seconds.labels(name)

        async def measured(behavior, request, context):
            m.in_flight.inc()
            start = time.perf_counter()
            code = "OK"
            try:
                response = await behavior(request, context)
                m._outcome(response)
                return response
            except BaseException:
                c = context.code()
                code = c.name if isinstance(c, grpc.StatusCode) else "CANCELLED"
                raise
            finally:
                m.in_flight.dec()
                seconds.observe(time.perf_counter() - start)
                handled.labels(name, code).inc()

        kinds = (("unary_unary", grpc.unary_unary_rpc_method_handler),
                 ("unary_stream", grpc.unary_stream_rpc_method_handler),
                 ("stream_unary", grpc.stream_unary_rpc_method_handler),
                 ("stream_stream", grpc.stream_stream_rpc_method_handler))
        for attr, make in kinds:
            behavior = getattr(handler, attr)
            if behavior is not None:
                async def wrapped(request, context, behavior=behavior):
                    return await measured(behavior, request, context)

                return make(wrapped, request_deserializer=handler.request_deserializer,
                            response_serializer=handler.response_serializer)
        return handler
