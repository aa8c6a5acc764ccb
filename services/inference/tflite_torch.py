"""A small TFLite -> torch interpreter for MediaPipe's own ``.tflite`` models.

The graph is read with the pure-Python ``tflite`` flatbuffer reader and built once into an
``nn.Module`` whose constants are buffers (so ``.to("cuda")`` moves the weights) and whose
``forward`` runs the ops in graph order on a whole batch. Activations are kept NCHW (torch's
layout) while the graph speaks NHWC: 4-D tensors are permuted where an op reads an axis
(reshape, concatenation), conv weights are transposed at build time, and TFLite's SAME
padding (the extra pixel goes after, not before) is applied explicitly. Constants are folded
at build: fp16 ``DEQUANTIZE`` to fp32, and ``DENSIFY`` (sparse CSR weights, used by the
full-range face detector and the pose detector) to dense tensors.

Only the ops these models use are mapped; an unknown op fails at build with its name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

_TYPES: dict[int, Any] = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


def _builtin_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}


def _options(op: Any, cls: Any) -> Any:
    table = op.BuiltinOptions()
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


def _vector(dim: Any, which: str) -> NDArray[np.int64]:
    """A sparse dimension's segments or indices (stored as a union of int vectors)."""
    import tflite

    table = getattr(dim, which)()
    kind = getattr(dim, which + "Type")()
    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}[kind]
    vec = cls()
    vec.Init(table.Bytes, table.Pos)
    return np.asarray(vec.ValuesAsNumpy(), dtype=np.int64)


SparseDim = tuple[bool, int, NDArray[np.int64] | None, NDArray[np.int64] | None]
"""One traversal dimension of a sparse tensor: (is CSR, dense size, segments, indices)."""


def sparse_dims(sparsity: Any) -> tuple[list[int], list[SparseDim]]:
    """A flatbuffer ``SparsityParameters`` as plain arrays: traversal order and its dimensions."""
    if sparsity.BlockMapLength():
        raise ValueError("blocked sparse tensors are not supported")
    dims: list[SparseDim] = []
    for i in range(sparsity.DimMetadataLength()):
        dim = sparsity.DimMetadata(i)
        if dim.Format() == 0:
            dims.append((False, int(dim.DenseSize()), None, None))
        else:
            dims.append((True, 0, _vector(dim, "ArraySegments"), _vector(dim, "ArrayIndices")))
    return [int(i) for i in sparsity.TraversalOrderAsNumpy()], dims


def densify(
    values: NDArray[Any], shape: Sequence[int], order: Sequence[int], dims: Sequence[SparseDim]
) -> NDArray[Any]:
    """TFLite's sparse-to-dense for unblocked formats (dense and CSR dimensions in any traversal order)."""
    dense = np.zeros(int(np.prod(shape)), dtype=values.dtype)
    strides = [int(np.prod(shape[i + 1 :])) for i in range(len(shape))]
    # Walk the traversal dims level by level: each level's (flat offset, segment position) pairs.
    offsets = np.zeros(1, dtype=np.int64)
    positions = np.zeros(1, dtype=np.int64)
    for level, (csr, size, segments, indices) in enumerate(dims):
        stride = strides[order[level]]
        if not csr:
            rng = np.arange(size, dtype=np.int64)
            offsets = (offsets[:, None] + rng[None, :] * stride).ravel()
            positions = (positions[:, None] * size + rng[None, :]).ravel()
        else:
            assert segments is not None and indices is not None
            counts = segments[positions + 1] - segments[positions]
            starts = np.repeat(segments[positions], counts)
            within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
            positions = starts + within
            offsets = np.repeat(offsets, counts) + indices[positions] * stride
    if len(offsets) != len(values):
        raise ValueError(f"sparse tensor has {len(values)} values for {len(offsets)} positions")
    dense[offsets] = values
    return dense.reshape(shape)


@dataclass(slots=True)
class _Op:
    kind: str
    inputs: list[int]
    outputs: list[int]
    attrs: dict[str, Any] = field(default_factory=dict)


_ACT = {0: None, 1: F.relu, 3: F.relu6, 4: torch.tanh}


def _nhwc_axis(axis: int) -> int:
    return {0: 0, 1: 2, 2: 3, 3: 1}[axis % 4]


def _same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    eff = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


class TFLiteModule(nn.Module):
    """One TFLite subgraph as a torch module: NHWC float input(s) in, the graph's outputs (NHWC) out."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        import tflite

        self.path = str(path)
        model = tflite.Model.GetRootAsModel(Path(path).read_bytes(), 0)
        graph = model.Subgraphs(0)
        names = _builtin_names()
        self.input_ids = [int(graph.Inputs(i)) for i in range(graph.InputsLength())]
        self.output_ids = [int(graph.Outputs(i)) for i in range(graph.OutputsLength())]
        self.input_shapes = [tuple(int(d) for d in graph.Tensors(i).ShapeAsNumpy()) for i in self.input_ids]
        self.output_names = [graph.Tensors(i).Name().decode() for i in self.output_ids]
        shapes = {i: [int(d) for d in graph.Tensors(i).ShapeAsNumpy()] for i in range(graph.TensorsLength())}
        consts: dict[int, NDArray[Any]] = {}
        for i in range(graph.TensorsLength()):
            tensor = graph.Tensors(i)
            data = model.Buffers(tensor.Buffer()).DataAsNumpy()
            if isinstance(data, np.ndarray) and data.size:
                arr = np.frombuffer(data.tobytes(), dtype=_TYPES[tensor.Type()])
                if tensor.Sparsity() is None:
                    arr = arr.reshape(shapes[i])
                else:
                    arr = densify(arr, shapes[i], *sparse_dims(tensor.Sparsity()))
                consts[i] = arr
        self._ops: list[_Op] = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            ins = [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(x) for x in op.OutputsAsNumpy()]
            if kind in ("DEQUANTIZE", "DENSIFY") and ins[0] in consts:
                consts[outs[0]] = consts[ins[0]].astype(np.float32)
                continue
            self._ops.append(self._build(kind, op, ins, outs, consts, shapes))
        self._consts: dict[int, str] = {}
        for op_ in self._ops:
            for t in op_.inputs:
                if t >= 0 and t in consts and t not in self._consts:
                    name = f"c{t}"
                    self.register_buffer(name, self._layout_const(op_, t, consts[t]), persistent=False)
                    self._consts[t] = name

    def _layout_const(self, op: _Op, tensor: int, arr: NDArray[Any]) -> torch.Tensor:
        """A constant in the layout its op wants (conv weights OIHW, per-channel vectors as (1, C, 1, 1))."""
        t = torch.from_numpy(np.array(arr.astype(np.float32) if arr.dtype.kind == "f" else arr))
        if op.kind == "CONV_2D" and tensor == op.inputs[1]:
            return t.permute(0, 3, 1, 2).contiguous()
        if op.kind == "DEPTHWISE_CONV_2D" and tensor == op.inputs[1]:
            return t.permute(3, 0, 1, 2).contiguous()
        if op.kind in ("PRELU", "ADD", "MUL") and op.attrs.get("rank4") and t.dtype == torch.float32:
            if t.dim() == 4:
                return t.permute(0, 3, 1, 2).contiguous()
            if t.dim() >= 1:  # broadcast over NHWC's last axis -> NCHW's channel axis
                full = t.reshape((1,) * (3 - t.dim()) + tuple(t.shape)) if t.dim() < 3 else t
                return full.permute(2, 0, 1).unsqueeze(0).contiguous()
        return t

    def _build(
        self,
        kind: str,
        op: Any,
        ins: list[int],
        outs: list[int],
        consts: dict[int, NDArray[Any]],
        shapes: dict[int, list[int]],
    ) -> _Op:
        import tflite

        attrs: dict[str, Any] = {}
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            cls = tflite.Conv2DOptions if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions
            o = _options(op, cls)
            w = shapes[ins[1]]
            attrs = {
                "stride": (o.StrideH(), o.StrideW()),
                "dilation": (o.DilationHFactor(), o.DilationWFactor()),
                "same": o.Padding() == 0,
                "act": o.FusedActivationFunction(),
                "kernel": (w[1], w[2]),
                "groups": 1 if kind == "CONV_2D" else shapes[ins[0]][3],
            }
        elif kind == "MAX_POOL_2D" or kind == "AVERAGE_POOL_2D":
            o = _options(op, tflite.Pool2DOptions)
            attrs = {
                "stride": (o.StrideH(), o.StrideW()),
                "kernel": (o.FilterHeight(), o.FilterWidth()),
                "same": o.Padding() == 0,
                "act": o.FusedActivationFunction(),
            }
        elif kind in ("ADD", "MUL"):
            o = _options(op, tflite.AddOptions if kind == "ADD" else tflite.MulOptions)
            attrs = {"act": o.FusedActivationFunction(), "rank4": len(shapes[ins[0]]) == 4}
        elif kind == "CONCATENATION":
            o = _options(op, tflite.ConcatenationOptions)
            rank = len(shapes[outs[0]])
            attrs = {"axis": o.Axis() % rank, "act": o.FusedActivationFunction()}
        elif kind == "RESHAPE":
            attrs = {"shape": shapes[outs[0]]}
        elif kind == "PAD":
            attrs = {"pads": [int(v) for v in consts[ins[1]].reshape(-1)]}
            ins = ins[:1]
        elif kind == "RESIZE_BILINEAR":
            o = _options(op, tflite.ResizeBilinearOptions)
            if not o.HalfPixelCenters() and not o.AlignCorners():
                raise ValueError(f"{self.path}: RESIZE_BILINEAR without half-pixel centers is not supported")
            attrs = {"size": tuple(int(v) for v in consts[ins[1]].reshape(-1)), "align": bool(o.AlignCorners())}
            ins = ins[:1]
        elif kind == "DEPTH_TO_SPACE":
            attrs = {"block": _options(op, tflite.DepthToSpaceOptions).BlockSize()}
        elif kind == "PRELU":
            attrs = {"rank4": len(shapes[ins[0]]) == 4}
        elif kind not in ("RELU", "RELU6", "LOGISTIC", "TANH"):
            raise ValueError(f"{self.path}: TFLite op {kind} is not supported")
        return _Op(kind=kind, inputs=ins, outputs=outs, attrs=attrs)

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """NHWC float inputs (batch first) -> the graph's outputs (4-D ones NHWC)."""
        values: dict[int, torch.Tensor] = {}
        for tid, x in zip(self.input_ids, inputs, strict=True):
            values[tid] = x.permute(0, 3, 1, 2) if x.dim() == 4 else x
        for op in self._ops:
            args = [values[t] if t in values else getattr(self, self._consts[t]) for t in op.inputs if t >= 0]
            values[op.outputs[0]] = self._run(op, args)
        return [values[t].permute(0, 2, 3, 1) if values[t].dim() == 4 else values[t] for t in self.output_ids]

    @staticmethod
    def _act(x: torch.Tensor, act: int) -> torch.Tensor:
        fn = _ACT.get(act)
        if act not in _ACT:
            raise ValueError(f"fused activation {act} is not supported")
        return x if fn is None else fn(x)

    def _run(self, op: _Op, args: list[torch.Tensor]) -> torch.Tensor:
        a = op.attrs
        k = op.kind
        if k in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x = args[0]
            if a["same"]:
                ph = _same_pad(x.shape[2], a["kernel"][0], a["stride"][0], a["dilation"][0])
                pw = _same_pad(x.shape[3], a["kernel"][1], a["stride"][1], a["dilation"][1])
                if ph != (0, 0) or pw != (0, 0):
                    x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
            bias = args[2] if len(args) > 2 else None
            y = F.conv2d(x, args[1], bias, stride=a["stride"], dilation=a["dilation"], groups=a["groups"])
            return self._act(y, a["act"])
        if k == "ADD":
            return self._act(args[0] + args[1], a["act"])
        if k == "MUL":
            return self._act(args[0] * args[1], a["act"])
        if k == "RELU":
            return F.relu(args[0])
        if k == "RELU6":
            return F.relu6(args[0])
        if k == "PRELU":
            x, alpha = args
            return torch.where(x >= 0, x, x * alpha)
        if k == "LOGISTIC":
            return torch.sigmoid(args[0])
        if k == "TANH":
            return torch.tanh(args[0])
        if k == "PAD":
            p = a["pads"]
            if len(p) == 8:  # NHWC pairs -> F.pad's last-dim-first order on NCHW
                return F.pad(args[0], (p[4], p[5], p[2], p[3], p[6], p[7], p[0], p[1]))
            return F.pad(args[0], tuple(v for pair in reversed(list(zip(p[::2], p[1::2], strict=True))) for v in pair))
        if k in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            x = args[0]
            if a["same"]:
                ph = _same_pad(x.shape[2], a["kernel"][0], a["stride"][0])
                pw = _same_pad(x.shape[3], a["kernel"][1], a["stride"][1])
                if ph != (0, 0) or pw != (0, 0):
                    fill = float("-inf") if k == "MAX_POOL_2D" else 0.0
                    x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=fill)
            if k == "MAX_POOL_2D":
                y = F.max_pool2d(x, a["kernel"], a["stride"])
            else:
                y = F.avg_pool2d(x, a["kernel"], a["stride"])  # SAME average pooling counts padding (not used here)
            return self._act(y, a["act"])
        if k == "CONCATENATION":
            axis = _nhwc_axis(a["axis"]) if args[0].dim() == 4 else a["axis"]
            return self._act(torch.cat(args, dim=axis), a["act"])
        if k == "RESHAPE":
            x = args[0]
            if x.dim() == 4:
                x = x.permute(0, 2, 3, 1)
            shape = list(a["shape"])
            y = x.reshape(x.shape[0], *shape[1:])
            return y.permute(0, 3, 1, 2) if y.dim() == 4 else y
        if k == "RESIZE_BILINEAR":
            return F.interpolate(args[0], size=a["size"], mode="bilinear", align_corners=a["align"])
        if k == "DEPTH_TO_SPACE":
            x = args[0]
            b, c, h, w = x.shape
            bs = a["block"]
            y = x.view(b, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
            return y.reshape(b, c // (bs * bs), h * bs, w * bs)
        raise AssertionError(k)
