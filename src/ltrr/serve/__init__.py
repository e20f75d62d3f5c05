"""``ltrr serve``: one pipeline behind an HTTP API (FastAPI on uvicorn).

``POST /search`` answers queries through micro-batched ``Pipeline.run_batch`` calls,
``POST /feedback`` logs events durably before acknowledging them and lets the
learners catch up in the background, ``GET /health`` and ``GET /metrics`` report,
``POST /admin/reload`` (or SIGHUP) swaps in a freshly compiled pipeline.

Modules: ``config`` (server options), ``models`` (request/response models),
``errors`` (one JSON error format), ``guard`` (who may call), ``middleware`` (the outer
ASGI layer: guard, body limits, request metrics), ``protocol`` (connection deadlines),
``metrics`` (Prometheus), ``search`` (POST /search: validation, micro-batching,
responses), ``intake`` (POST /feedback: durable event intake), ``decisions`` (the
decision writer), ``learner`` (the background learner), ``holder`` (the live pipeline
and reloads), ``queue_worker`` (the thread shape of search and intake), ``app`` (the
FastAPI app and the :class:`~ltrr.serve.app.Server` holding the parts), ``gc_policy``,
``process``, ``server``, ``supervisor``, ``worker``, ``workers`` (processes, signals,
several workers on one port), ``docs`` (the local /docs page). Importing this package loads
none of FastAPI, uvicorn or the runtime.
"""
