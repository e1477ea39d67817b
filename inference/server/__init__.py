"""The OpenAI-compatible HTTP server (FastAPI on uvicorn), one module per job.

``limits`` (what a client may take), ``connections`` (slots and read deadlines), ``app``
(routes, API key, error bodies), ``chat`` (one chat request, first byte to answer),
``compiler`` + ``compile_worker`` (JSON Schemas compiled off the model), ``gate`` (one
generation at a time), ``chat_server`` (``ChatServer``: binding, running, stopping).
Import ``ChatServer`` from ``sllmbo.inference.http_server``; this package imports nothing
heavy by itself.
"""
