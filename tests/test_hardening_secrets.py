"""Credentials in URLs (a storage's password, a server's user:password) are masked wherever a
URL is shown or stored: messages, ``--output`` JSON, study attributes, data cards, adapters."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from inference_fixtures import WordTokenizer

from sllmbo.cli import main
from sllmbo.core.storage import mask_url, redact

PASSWORD = "Hunter2Secret"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and everything the command printed (stdout + stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out + captured.err


class _EchoingHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that lists one model and fails every completion with a
    message quoting the URL it was called with (as some proxies do)."""

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        url = f"http://bob:{PASSWORD}@127.0.0.1:{self.server.server_address[1]}/v1"
        self._send(502, {"error": {"message": f"upstream {url} failed"}})

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _echoing_server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _files_holding(root: Path, secret: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and secret.encode() in p.read_bytes())


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg2://u:PW1234@h:5432/db", "postgresql+psycopg2://u:***@h:5432/db"),
    ("postgresql://u@h/db?password=PW1234", "postgresql://u@h/db?password=***"),
    ("mysql://u:PW1234@h:notaport/db", "mysql://u:***@h:notaport/db"),
    ("http://bob:PW1234@127.0.0.1:8000/v1", "http://bob:***@127.0.0.1:8000/v1"),
    ("https://host/v1?api_key=PW1234", "https://host/v1?api_key=***"),
    ("sqlite:///runs.db", "sqlite:///runs.db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
])
def test_mask_url_hides_passwords_and_secret_query_values(url, shown):
    assert mask_url(url) == shown
    if "PW1234" in url:  # a library's message that quotes the URL or the password
        assert "PW1234" not in redact(f"could not parse {url!r}: bad PW1234", url)


def test_no_artefact_of_a_run_holds_a_password(postgres_url, tmp_path, capsys, monkeypatch):
    import sllmbo.data.build as build
    from sllmbo.data.trial_logs import read_trial_logs

    monkeypatch.setattr(build, "load_tokenizer", lambda path=None: WordTokenizer())
    storage = postgres_url.replace("sllmbo@", f"sllmbo:{PASSWORD}@")  # trust auth ignores it
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    frame["y"] = 2 * frame["a"] + rng.normal(scale=0.1, size=40)
    frame.to_csv(tmp_path / "data.csv", index=False)
    common = ["--data", str(tmp_path / "data.csv"), "--target", "y", "--n-trials", "2",
              "--n-folds", "2", "--quiet", "--storage", storage]
    printed = []
    code, text = _cli(["tune", *common, "--study", "tpe", "--output",
                       str(tmp_path / "tpe.json")], capsys)
    assert code == 0, text
    printed.append(text)
    llm = ["--sampler", "llm-tpe", "--backend", "openai", "--n-initial", "1"]
    with _echoing_server() as port:  # its errors quote the URL, password and all
        code, text = _cli(["tune", *common, *llm, "--study", "llm", "--base-url",
                           f"http://bob:{PASSWORD}@127.0.0.1:{port}/v1", "--output",
                           str(tmp_path / "llm.json")], capsys)
    assert code == 0, text
    printed.append(text)
    code, text = _cli(["tune", *common, *llm, "--study", "down", "--base-url",
                       f"http://bob:{PASSWORD}@127.0.0.1:{_closed_port()}/v1"], capsys)
    assert code == 2 and "bob:***@127.0.0.1" in text, text
    printed.append(text)
    code, text = _cli(["data", "build", "--storage", storage, "--out",
                       str(tmp_path / "instructions"), "--quiet"], capsys)
    assert code == 0, text
    printed.append(text)
    code, text = _cli(["data", "export", "--storage", storage, "--out",
                       str(tmp_path / "export.jsonl.gz")], capsys)
    assert code == 0, text
    printed.append(text)
    down = f"postgresql+psycopg2://sllmbo:{PASSWORD}@127.0.0.1:{_closed_port()}/postgres"
    for argv in (["tune", "--data", str(tmp_path / "data.csv"), "--target", "y",
                  "--storage", down],
                 ["tune", "--data", str(tmp_path / "data.csv"), "--target", "y",
                  "--storage", f"postgresql://sllmbo:{PASSWORD}@host:port/db"],
                 ["data", "build", "--storage", down, "--out", str(tmp_path / "none")],
                 ["data", "import", str(tmp_path / "export.jsonl.gz"), "--storage", down]):
        code, text = _cli(argv, capsys)
        assert code == 2 and "***" in text, text
        printed.append(text)

    stored = json.dumps([{"attrs": s.user_attrs, "trials": [t.user_attrs for t in s.trials]}
                         for s in read_trial_logs(storage).studies])
    assert "HTTP 502" in stored  # the LLM-TPE run recorded the server's errors, masked
    assert PASSWORD not in stored
    assert [i for i, text in enumerate(printed) if PASSWORD in text] == []
    assert _files_holding(tmp_path, PASSWORD) == []


def test_an_adapter_gets_a_masked_copy_of_an_old_data_card(tmp_path):
    from sllmbo.training.outputs import copy_card

    old = {"tasks": {"train": ["x"]}, "sources": [
        {"location": f"postgresql://u:{PASSWORD}@db/optuna"}, {"location": "a.db", "sha256": "0"}]}
    (tmp_path / "card.json").write_text(json.dumps(old))
    copy_card(tmp_path / "card.json", tmp_path / "copy.json")
    copied = json.loads((tmp_path / "copy.json").read_text())
    assert copied["sources"][0]["location"] == "postgresql://u:***@db/optuna"
    assert copied["sources"][1] == old["sources"][1] and copied["tasks"] == old["tasks"]


def test_eval_plan_masks_a_password_in_the_base_url() -> None:
    from dataclasses import replace

    from sllmbo.eval.harness import plan_eval
    from sllmbo.eval.suites import SUITES
    from sllmbo.tune import LLMOptions

    llm = replace(LLMOptions(), base_url="http://user:s3cretPW@127.0.0.1:9/v1")
    plan = plan_eval(SUITES["smoke"], None, "/tmp/unused", llm, None, False)
    assert "s3cretPW" not in json.dumps(plan.to_dict())
