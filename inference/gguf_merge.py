"""Base GGUF + PEFT LoRA adapter -> one merged GGUF for llama.cpp, with numpy only (no torch).

Why merge instead of llama.cpp's run-time LoRA: a run-time adapter adds four graph nodes to each
of the 210 adapted matrices of the embedded model (every forward pays them); merged weights
cost nothing extra. Why Q8_0 (or F16) and not back to the shipped Q4_1: the adapter's change is
a few percent of a 4-bit quantization step, so re-quantizing to 4 bits erases most of it (only
6-8% of it survived Q4_1 in a layer-0 probe); Q8_0 keeps it (its step is ~30x finer) and has
llama.cpp's fast batched CPU kernels (tinyBLAS, repacking), which Q4_1 lacks.

The math is PEFT's ``W + (alpha / r) * B @ A`` on the de-quantized base weights, with one
twist: llama.cpp stores the q and k projections with their rows permuted (rotary halves
interleaved per head, ``convert_hf_to_gguf.LlamaModel.permute``), and the adapter was trained
on the Hugging Face layout, so the rows of ``B`` are permuted the same way first. Every
metadata field (tokenizer, chat template, hyperparameters) is copied from the base file.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.core.errors import BackendError

#: PEFT module name -> llama.cpp tensor name inside ``blk.N``.
MODULE_TO_GGUF = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
#: Output types and their ``general.file_type`` (llama.cpp's ``LLAMA_FTYPE_MOSTLY_*``).
OUT_TYPES = {"Q8_0": 7, "F16": 1}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as float32 (bf16 widened by hand: numpy has no
    bfloat16, and ``safetensors.numpy`` cannot read it)."""
    kinds = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        blob = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in kinds:
            raise BackendError(f"{path}: tensor {name} has dtype {meta['dtype']}, expected one "
                               f"of {', '.join(kinds)}", hint="save the adapter in bf16/f16/f32")
        start, end = meta["data_offsets"]
        raw = np.frombuffer(blob[start:end], dtype=kinds[meta["dtype"]])
        if meta["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.astype(np.float32).reshape(meta["shape"])
    return out


def lora_deltas(adapter_path: Path, n_head: int, n_head_kv: int) -> dict[str, np.ndarray]:
    """``{gguf tensor name: (alpha / r) * B @ A}`` in llama.cpp's row order, float32."""
    config = json.loads((adapter_path / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise BackendError(f"adapter {adapter_path} is not a plain LoRA adapter",
                           hint="the llama.cpp engine merges LoRA adapters only; use "
                           "--backend transformers")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / (rank ** 0.5 if config.get("use_rslora") else rank)
    tensors = read_safetensors(adapter_path / "adapter_model.safetensors")
    deltas: dict[str, np.ndarray] = {}
    for name, a in tensors.items():
        if ".lora_A." not in name:
            continue
        b = tensors[name.replace(".lora_A.", ".lora_B.")]
        # base_model.model.model.layers.N.<module>.lora_A.weight
        path = name.split(".layers.", 1)[1].split(".lora_A.")[0]
        layer, module = path.split(".", 1)
        if module not in MODULE_TO_GGUF:
            raise BackendError(f"adapter {adapter_path} adapts {module!r}, which the llama.cpp "
                               "merge does not map", hint="use --backend transformers")
        target = MODULE_TO_GGUF[module]
        if target == "attn_q":
            b = permute_rows(b, n_head)
        elif target == "attn_k":
            b = permute_rows(b, n_head_kv)
        deltas[f"blk.{int(layer)}.{target}.weight"] = scale * (b @ a)
    return deltas


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (``LlamaModel.permute`` in ``convert_hf_to_gguf.py``)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def merge_to_gguf(base: Path, adapter_path: Path | None, out: Path, out_type: str = "Q8_0",
                  progress: Callable[[str], None] | None = None) -> Path:
    """Write ``base`` with ``adapter_path`` folded into its weights to ``out``, the linear
    layers in ``out_type`` (``OUT_TYPES``); no adapter: the base re-quantized. Atomic: written
    beside ``out`` and renamed into place."""
    import gguf
    from gguf.quants import dequantize, quantize

    if out_type not in OUT_TYPES:
        raise BackendError(f"unknown GGUF type {out_type!r}", hint=f"use one of {list(OUT_TYPES)}")
    qtype = gguf.GGMLQuantizationType[out_type]
    reader = gguf.GGUFReader(str(base))
    arch = str(reader.fields["general.architecture"].contents())
    if arch != "llama":
        raise BackendError(f"{base} is a {arch!r} model; the merge knows llama only",
                           hint="use --backend transformers")
    n_head = int(reader.fields["llama.attention.head_count"].contents())
    n_head_kv = int(reader.fields["llama.attention.head_count_kv"].contents())
    deltas = lora_deltas(adapter_path, n_head, n_head_kv) if adapter_path is not None else {}
    names = {t.name for t in reader.tensors}
    unknown = sorted(set(deltas) - names)
    if unknown:
        raise BackendError(f"adapter {adapter_path} does not fit {base}: no tensor {unknown[0]}",
                           hint="use the base model the adapter was trained on")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", suffix=".gguf", dir=out.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp_name, arch=arch)
        for field in reader.fields.values():
            if field.name == "general.architecture" or field.name.startswith("GGUF."):
                continue
            value = OUT_TYPES[out_type] if field.name == "general.file_type" else field.contents()
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, value, vtype, sub_type=sub)
        linear = {gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q4_1,
                  gguf.GGMLQuantizationType.Q5_0, gguf.GGMLQuantizationType.Q5_1,
                  gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q5_K,
                  gguf.GGMLQuantizationType.Q6_K}
        for i, tensor in enumerate(reader.tensors):
            if tensor.name in deltas or tensor.tensor_type in linear:
                weight = dequantize(tensor.data, tensor.tensor_type)
                if tensor.name in deltas:
                    weight = weight + deltas[tensor.name]
                if out_type == "F16":
                    writer.add_tensor(tensor.name, weight.astype(np.float16))
                else:  # bytes: the writer derives the element shape from the type
                    writer.add_tensor(tensor.name, quantize(weight.astype(np.float32), qtype),
                                      raw_dtype=qtype)
            else:  # embeddings (Q8_0 already), norms (F32): as they are
                writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
            if progress is not None and i % 50 == 0:
                progress(f"{i}/{len(reader.tensors)} tensors")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return out


def describe(path: Path) -> dict[str, Any]:
    """Tensor counts by type of a GGUF file (for checks and benchmarks)."""
    import gguf

    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(str(path)).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return counts
