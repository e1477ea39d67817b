"""The text side of the llama.cpp engine: tokenizer, chat template, stop tokens and grammars.

Why its own module: llama.cpp sees only token ids; the prompt the model reads is rendered here
from the model folder's own chat template (as the transformers path renders it), and a request's
JSON Schema becomes an llguidance matcher here. Nothing here imports torch or llama.cpp.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sllmbo.core.errors import BackendError, ModelNotFoundError

#: Compiled grammars kept (the newest), keyed by their schema.
GRAMMARS_KEPT = 64


class ChatText:
    """Renders and tokenizes chat prompts of the model in ``folder`` and compiles schemas.

    Args:
        folder: a Hugging Face model folder (``tokenizer.json``, a chat template,
            ``generation_config.json``).
    """

    def __init__(self, folder: Path) -> None:
        import jinja2.sandbox
        from tokenizers import Tokenizer

        self.folder = folder
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ModelNotFoundError(f"no tokenizer.json in {folder}",
                                     hint="the llama.cpp engine reads the model folder's "
                                     "tokenizer; re-run `sllmbo models pull`")
        self.tokenizer = Tokenizer.from_file(str(path))
        config = read_json(folder / "tokenizer_config.json")
        template = config.get("chat_template")
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        if not template:
            raise BackendError(f"the tokenizer of {folder} has no chat template",
                               hint="use an instruct model, or add chat_template.jinja")
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        self._template = env.from_string(template)
        self._special = {k: v for k, v in config.items()
                         if k.endswith("_token") and isinstance(v, str)}
        ids: set[int] = set()
        generation = read_json(folder / "generation_config.json")
        eos = generation.get("eos_token_id")
        ids.update([eos] if isinstance(eos, int) else (eos or []))
        if isinstance(config.get("eos_token"), str):
            token = self.tokenizer.token_to_id(config["eos_token"])
            if token is not None:
                ids.add(token)
        if not ids:
            raise BackendError("the model defines no end-of-sequence token",
                               hint="set eos_token_id in generation_config.json")
        self.stop_token_ids = sorted(int(i) for i in ids)
        self.stops = frozenset(self.stop_token_ids)
        self._llg_tokenizer: Any = None
        self._grammars: OrderedDict[str, str] = OrderedDict()

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The chat prompt as text, ready for the assistant's answer."""
        import jinja2

        try:
            return self._template.render(messages=list(messages), add_generation_prompt=True,
                                         **self._special)
        except jinja2.TemplateError as err:
            raise BackendError(f"cannot apply the chat template of {self.folder}: {err}",
                               hint="use an instruct model whose tokenizer has a chat "
                               "template") from None

    def encode_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The chat prompt's token ids, as the transformers path encodes them."""
        return self.encode(self.render(messages))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens added."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens dropped."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def grammar(self, schema: dict[str, Any]) -> str:
        """llguidance's grammar for ``schema`` in the compact form training targets use."""
        import llguidance

        key = json.dumps(schema, sort_keys=True)
        if key in self._grammars:
            self._grammars.move_to_end(key)
            return self._grammars[key]
        # No free whitespace, compact separators: the form the transformers path decodes
        # (xgrammar with any_whitespace=False, separators (",", ":")) and training targets use.
        compact = {**schema, "x-guidance": {"whitespace_flexible": False,
                                            "item_separator": ",", "key_separator": ":"}}
        grammar = llguidance.grammar_from("json_schema", json.dumps(compact))
        ok, problems = _validate_grammar(grammar)
        if not ok:
            raise BackendError(f"the constrained decoder cannot compile this JSON Schema: "
                               f"{problems}",
                               hint="use plain types, enums, minimum/maximum and local $refs")
        self._grammars[key] = grammar
        while len(self._grammars) > GRAMMARS_KEPT:
            self._grammars.popitem(last=False)
        return grammar

    def matcher(self, schema: dict[str, Any], vocab_size: int) -> Any:
        """A fresh llguidance matcher enforcing ``schema`` over a ``vocab_size`` vocabulary."""
        import llguidance

        if self._llg_tokenizer is None:
            self._llg_tokenizer = llguidance.LLTokenizer(
                str(self.folder / "tokenizer.json"), n_vocab=vocab_size,
                eos_token=self.stop_token_ids[0])
        matcher = llguidance.LLMatcher(self._llg_tokenizer, self.grammar(schema), log_level=0)
        if matcher.is_error():
            raise BackendError(f"the constrained decoder rejected this JSON Schema: "
                               f"{matcher.get_error()}")
        return matcher


def _validate_grammar(grammar: str) -> tuple[bool, str]:
    import llguidance

    ok, is_error, messages = True, False, []
    result = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if isinstance(result, tuple):
        is_error, messages = result[0], result[1]
        ok = not is_error
    return ok, "; ".join(messages)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, {} where it is missing or not an object."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as err:
        raise BackendError(f"cannot read {path}: {err}") from None
    return data if isinstance(data, dict) else {}
