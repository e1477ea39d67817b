"""The child process that compiles JSON Schemas for the server (``compiler.py`` starts it).

Forked from multiprocessing's fork server, which has imported this module, and with it
xgrammar (and torch and transformers behind it), once: a new child is ready in milliseconds,
which matters because the server kills a child whose compile outlives its request. The
child reads the tokenizer (``xgrammar.TokenizerInfo.serialize_json``) from a file, answers
``{"ready": True}``, then answers each schema it is sent with
``{"grammar": SERIALIZED, "seconds": S}`` or ``{"error": MESSAGE}``. It holds no model.
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection

import xgrammar as xgr  # imported here so the fork server has it before any child

from sllmbo.core.errors import BackendError
from sllmbo.inference.constrained import compile_schema


def run(conn: Connection, info_path: str) -> None:
    with open(info_path) as file:
        info = xgr.TokenizerInfo.deserialize_json(file.read())
    # One thread: the model generates on the other core while this compiles.
    compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
    conn.send({"ready": True})
    while True:
        try:
            schema = conn.recv()
        except EOFError:  # the server is gone
            return
        started = time.perf_counter()
        try:
            grammar = compile_schema(compiler, schema)
        except BackendError as err:
            conn.send({"error": err.message})
            continue
        conn.send({"grammar": grammar.serialize_json(),
                   "seconds": time.perf_counter() - started})
