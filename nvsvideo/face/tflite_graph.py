"""A float TFLite graph as a torch module: the weights are read from the flatbuffer, the ops run in torch.

MediaPipe ships its face models as `.tflite` flatbuffers. Reading them with the flatbuffers-generated
`tflite` parser and running the handful of ops they use (convolutions, PReLU, pooling, padding,
reshapes) as torch calls puts them on any torch device and lets one call cover a batch of crops,
which the reference runtime (CPU, batch 1) cannot. Nothing in the file is executed: it holds only
tensors and op descriptions, and an op outside `SUPPORTED_OPS` is refused when the graph is built.

Activations stay NCHW inside the module (torch's fast layout); inputs and outputs use the file's
NHWC layout so results compare one to one with the reference runtime. Float16 constants (fed through
DEQUANTIZE ops in some of these files) are widened to float32 once, at load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nvsvideo.errors import WeightsError

#: Ops a graph may use.
SUPPORTED_OPS = ("ADD", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "MAX_POOL_2D", "PAD",
                 "PRELU", "RELU", "RESHAPE", "RESIZE_BILINEAR")
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}
# TFLite's fused activation codes: NONE, RELU, RELU_N1_TO_1, RELU6.
_ACTIVATIONS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    0: lambda x: x, 1: F.relu, 2: lambda x: x.clamp(-1.0, 1.0), 3: lambda x: x.clamp(0.0, 6.0)}
_SAME = 0  # tflite Padding.SAME (VALID is 1)


@dataclass(frozen=True)
class GraphSpec:
    """What a model file must look like to be the model we expect (checked when it is loaded)."""

    inputs: tuple[tuple[int, ...], ...]
    """NHWC shapes of the graph inputs."""
    outputs: tuple[tuple[int, ...], ...]
    """Shapes of the graph outputs, in the file's order."""


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: (before, after), the odd pixel going after.

    Args:
        size: input length.
        kernel: kernel length.
        stride: stride.
        dilation: dilation.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _to_nchw(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


class TfliteGraph(nn.Module):
    """The first subgraph of a float `.tflite` file as a module.

    Example:
        graph = TfliteGraph.from_file(path, spec)
        regressors, scores = graph(images_nhwc)  # one tensor per graph output, batch first
    """

    def __init__(self, model_bytes: bytes, name: str) -> None:
        """
        Args:
            model_bytes: the file's content.
            name: the file name, for messages.

        Raises:
            WeightsError: not a TFLite flatbuffer, or one using ops or types we do not run.
        """
        super().__init__()
        import tflite
        from tflite.BuiltinOperator import BuiltinOperator

        self.name = name
        op_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
        try:
            model = tflite.Model.GetRootAsModel(model_bytes, 0)
            graph = model.Subgraphs(0)
            count = graph.OperatorsLength()
        except Exception as err:  # a corrupt flatbuffer fails in many ways inside the generated reader
            raise WeightsError(f"{name} is not a readable TFLite model ({type(err).__name__})") from None
        self._model, self._graph, self._tflite = model, graph, tflite
        self._shapes = {i: tuple(int(d) for d in graph.Tensors(i).ShapeAsNumpy())
                        for i in range(graph.TensorsLength()) if not graph.Tensors(i).ShapeIsNone()}
        self.input_ids = [int(graph.Inputs(k)) for k in range(graph.InputsLength())]
        self.output_ids = [int(graph.Outputs(k)) for k in range(graph.OutputsLength())]
        self._constants: dict[int, str] = {}
        self._steps: list[tuple[Callable[..., torch.Tensor], list[int], int]] = []
        for k in range(count):
            op = graph.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            if kind not in SUPPORTED_OPS:
                raise WeightsError(f"{name} uses the TFLite op {kind}, which nvsvideo does not run")
            inputs, outputs = list(op.InputsAsNumpy()), list(op.OutputsAsNumpy())
            self._steps.append(self._build(kind, op, inputs, outputs))
        del self._model, self._graph, self._tflite  # the flatbuffer is not needed after building

    @classmethod
    def from_file(cls, path: Path, spec: GraphSpec) -> TfliteGraph:
        """Read `path` and check its input and output shapes against `spec`.

        Raises:
            WeightsError: unreadable file, unsupported graph, or a graph of another shape than `spec`.
        """
        try:
            data = path.read_bytes()
        except OSError as err:
            raise WeightsError(f"cannot read {path}: {err.strerror}") from None
        graph = cls(data, path.name)
        shapes = (graph.input_shapes, tuple(graph._shapes[i] for i in graph.output_ids))
        if shapes != (spec.inputs, spec.outputs):
            raise WeightsError(f"{path} is not the expected model: inputs/outputs {shapes}, "
                               f"expected {(spec.inputs, spec.outputs)}")
        return graph

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        """NHWC shapes of the graph inputs, as the file declares them (batch 1)."""
        return tuple(self._shapes[i] for i in self.input_ids)

    # ----------------------------------------------------------------------------------------- building

    def _options(self, op, cls_name: str):
        table = op.BuiltinOptions()
        options = getattr(self._tflite, cls_name)()
        options.Init(table.Bytes, table.Pos)
        return options

    def _array(self, index: int) -> np.ndarray:
        tensor = self._graph.Tensors(index)
        dtype = _DTYPES.get(tensor.Type())
        if dtype is None:
            raise WeightsError(f"{self.name}: tensor {tensor.Name().decode()} has a type nvsvideo does not read")
        raw = self._model.Buffers(tensor.Buffer()).DataAsNumpy()
        if not isinstance(raw, np.ndarray):
            raise WeightsError(f"{self.name}: constant tensor {tensor.Name().decode()} has no data")
        return np.frombuffer(raw.tobytes(), dtype=dtype).reshape(self._shapes[index]).astype(
            np.float32 if dtype == np.float16 else dtype)

    def _constant(self, index: int, array: np.ndarray) -> None:
        key = f"c{index}"
        self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(array)), persistent=False)
        self._constants[index] = key

    def _build(self, kind: str, op, inputs: list[int], outputs: list[int]):
        out = outputs[0]
        if kind == "DEQUANTIZE":
            self._constant(out, self._array(inputs[0]))
            return (lambda: None), [], -1
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            return self._conv(kind, op, inputs, out)
        if kind == "MAX_POOL_2D":
            o = self._options(op, "Pool2DOptions")
            kernel, stride = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
            pad = self._pad_for(inputs[0], kernel, stride, (1, 1), o.Padding())
            act = _ACTIVATIONS[o.FusedActivationFunction()]
            return (lambda x: act(F.max_pool2d(F.pad(x, pad, value=float("-inf")), kernel, stride))), inputs[:1], out
        if kind == "ADD":
            act = _ACTIVATIONS[self._options(op, "AddOptions").FusedActivationFunction()]
            return (lambda a, b: act(a + b)), inputs, out
        if kind == "RELU":
            return F.relu, inputs, out
        if kind == "PRELU":
            alpha = self._weight(inputs[1])
            if alpha.size != self._shapes[inputs[0]][-1]:
                raise WeightsError(f"{self.name}: a PReLU whose slopes vary over space is not supported")
            self._constant(inputs[1], alpha.reshape(-1))  # one slope per channel: torch's own PReLU
            return F.prelu, inputs, out
        if kind == "PAD":
            pads = self._array(inputs[1])
            nchw = pads[[0, 3, 1, 2]] if len(pads) == 4 else pads
            flat = tuple(int(v) for pair in nchw[::-1] for v in pair)  # F.pad wants the last axis first
            return (lambda x: F.pad(x, flat)), inputs[:1], out
        if kind == "RESHAPE":
            shape = self._shapes[out]
            return (lambda x: _nchw(_nhwc(x).reshape(x.shape[0], *shape[1:]))), inputs[:1], out
        if kind == "CONCATENATION":
            o = self._options(op, "ConcatenationOptions")
            rank = len(self._shapes[out])
            axis = o.Axis() % rank
            axis = (0, 2, 3, 1)[axis] if rank == 4 else axis
            act = _ACTIVATIONS[o.FusedActivationFunction()]
            return (lambda *xs: act(torch.cat(xs, dim=axis))), inputs, out
        # RESIZE_BILINEAR
        o = self._options(op, "ResizeBilinearOptions")
        size = tuple(int(v) for v in self._array(inputs[1]))
        if o.AlignCorners():
            return (lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=True)), inputs[:1], out
        if not o.HalfPixelCenters():
            # Legacy TF sampling (source = dest * in / out, no half-pixel shift) is not what torch offers.
            raise WeightsError(f"{self.name} uses a bilinear resize mode nvsvideo does not run")
        return (lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=False)), inputs[:1], out

    def _weight(self, index: int) -> np.ndarray:
        """A constant input: from its buffer, or the float32 copy a DEQUANTIZE op made of it."""
        if index in self._constants:
            return getattr(self, self._constants[index]).numpy()
        array = self._array(index)
        self._constant(index, array)
        return array

    def _pad_for(self, index: int, kernel, stride, dilation, padding: int) -> tuple[int, int, int, int]:
        if padding != _SAME:
            return (0, 0, 0, 0)
        _, h, w, _ = self._shapes[index]
        top, bottom = same_padding(h, kernel[0], stride[0], dilation[0])
        left, right = same_padding(w, kernel[1], stride[1], dilation[1])
        return (left, right, top, bottom)

    def _conv(self, kind: str, op, inputs: list[int], out: int):
        depthwise = kind == "DEPTHWISE_CONV_2D"
        o = self._options(op, "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions")
        weight = self._weight(inputs[1])  # conv: [O, kh, kw, I]; depthwise: [1, kh, kw, C * M]
        kernel = weight.shape[1:3]
        stride, dilation = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
        pad = self._pad_for(inputs[0], kernel, stride, dilation, o.Padding())
        groups = self._shapes[inputs[0]][3] if depthwise else 1
        torch_weight = np.transpose(weight, (3, 0, 1, 2)) if depthwise else np.transpose(weight, (0, 3, 1, 2))
        self._constant(inputs[1], torch_weight)
        has_bias = len(inputs) > 2 and inputs[2] >= 0
        if has_bias:
            self._weight(inputs[2])
        act = _ACTIVATIONS[o.FusedActivationFunction()]

        # Symmetric padding goes into the convolution itself (no padded copy); TF's odd extra pixel does not.
        left, right, top, bottom = pad
        inner = (min(top, bottom), min(left, right))
        outer = (left - inner[1], right - inner[1], top - inner[0], bottom - inner[0])

        def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
            if any(outer):
                x = F.pad(x, outer)
            return act(F.conv2d(x, w, b, stride, inner, dilation, groups))

        return run, inputs[:3] if has_bias else inputs[:2], out

    # ---------------------------------------------------------------------------------------- running

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run the graph.

        Args:
            inputs: one float32 tensor per graph input, NHWC with any batch size.

        Returns:
            the graph outputs in the file's order and layout, batch first.
        """
        values: dict[int, torch.Tensor] = {k: getattr(self, v) for k, v in self._constants.items()}
        for index, x in zip(self.input_ids, inputs, strict=True):
            values[index] = _nchw(x)
        for run, args, out in self._steps:
            if out >= 0:
                values[out] = run(*(values[i] for i in args))
        return [_nhwc(values[i]) for i in self.output_ids]
