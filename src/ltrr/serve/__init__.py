"""``ltrr serve``: one pipeline behind an HTTP API (FastAPI on uvicorn).

``POST /search`` answers queries through micro-batched ``Pipeline.run_batch`` calls,
``POST /feedback`` logs events durably before acknowledging them and lets the
learners catch up in the background, ``GET /health`` and ``GET /metrics`` report,
``POST /admin/reload`` (or SIGHUP) swaps in a freshly compiled pipeline.

Modules: ``config`` (server options), ``models`` (request/response models),
``errors`` (one JSON error format), ``limits`` (body size limits), ``metrics``
(Prometheus), ``batching`` (the micro-batcher), ``holder`` (the live pipeline and
reloads), ``feedback`` (durable event intake and the background learner), ``app``
(the FastAPI app), ``server`` (uvicorn and signals). Importing this package loads
none of FastAPI, uvicorn or the runtime.
"""
