"""ONNX export of CodeFormer with the fidelity weight w kept as a graph input, and an onnxruntime restorer.

The exported graph:

    inputs   image     float32 (B, 3, S, S)   RGB in [-1, 1], S = the model's img_size (512 for the release)
             w         float32 (B,)           one fidelity weight per image, usually in [0, 1]
    output   restored  float32 (B, 3, S, S)   about [-1, 1], unclamped (as `CodeFormer.restore`)

B is a dynamic axis unless `dynamic_batch=False` (then B = 1). w is a per-image vector rather than a scalar so
that one call can restore faces asked for with different w (the server batches requests from several clients
that way); pass `np.full(B, w, np.float32)` for a single value. AdaIN of the predicted latent (the official
inference default) is part of the graph. The fusion blocks always run: w is data, never a constant, so the
knob cannot be folded away (the failure of the ReActor export, which hard-codes w = 1).

Exporter: the legacy TorchScript exporter (`exporter="torchscript"`, the default) writes opset 17 as asked and
exported the full network in about 30 s here; the torch.export-based one (`exporter="dynamo"`) matches it
numerically but only writes opset >= 18 for this network (onnx has no Pad adapter down to 17) and takes longer.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from codeformer.atomic import write_bytes
from codeformer.models.codeformer import CodeFormer

log = logging.getLogger(__name__)

INPUT_IMAGE = "image"
INPUT_W = "w"
OUTPUT = "restored"
EXPORTERS = ("torchscript", "dynamo")
LICENCE_NOTE = "CodeFormer weights: S-Lab License 1.0 (non-commercial); see the codeformer package."


def _require(module: str):  # noqa: ANN202 - returns a module
    """Import an optional dependency, or fail with the install command."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"{module} is not installed: pip install 'codeformer[onnx]'") from exc


class RestoreGraph(nn.Module):
    """What is exported: (image (B, 3, S, S), w (B,)) → restored (B, 3, S, S), AdaIN on."""

    def __init__(self, model: CodeFormer) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.model(image, w, adain_latent=True).out


def _example_inputs(model: CodeFormer, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic example input in [-1, 1] of the model's size and a w vector, on the model's device."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, model.img_size, model.img_size, generator=g) * 2 - 1
    w = torch.linspace(0.0, 1.0, batch) if batch > 1 else torch.full((1,), 0.5)
    return x.to(device), w.to(device)


def _export_proto(graph: RestoreGraph, example: tuple[torch.Tensor, torch.Tensor], opset: int,
                  dynamic_batch: bool, exporter: str):
    """Run the chosen torch exporter; returns an onnx.ModelProto."""
    onnx = _require("onnx")
    if exporter == "dynamo":
        _require("onnxscript")

    names = {"input_names": [INPUT_IMAGE, INPUT_W], "output_names": [OUTPUT]}
    if exporter == "torchscript":
        axes = {INPUT_IMAGE: {0: "batch"}, INPUT_W: {0: "batch"}, OUTPUT: {0: "batch"}} if dynamic_batch else None
        buf = io.BytesIO()
        # no constant folding here: it made the full-size export ~1.7x slower and onnxruntime folds at load
        torch.onnx.export(graph, example, buf, opset_version=opset, dynamic_axes=axes, dynamo=False,
                          do_constant_folding=False, **names)
        return onnx.load_from_string(buf.getvalue())
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes = ({0: batch}, {0: batch}) if dynamic_batch else None
    program = torch.onnx.export(graph, example, None, opset_version=opset, dynamic_shapes=shapes, dynamo=True,
                                **names)
    return program.model_proto


def export_onnx(model: CodeFormer, path: str | os.PathLike[str], opset: int = 17, dynamic_batch: bool = True,
                exporter: str = "torchscript") -> Path:
    """Write `model` as ONNX to `path` (atomically: temp file + rename) and return the path.

    Graph inputs `image` (B, 3, S, S) and `w` (B,), output `restored` (see the module docstring). The model is
    exported in eval mode on its own device, in float32. Raises ValueError for an unknown exporter or when the
    exporter could not write the requested opset.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        # trace with batch 2, so that no size-1 batch dimension can be baked into the graph as a constant
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer's notes on Python-side shape checks and the legacy exporter's deprecation notice: the
            # graph is verified against PyTorch by check_onnx instead
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=".*Constant folding.*")
            warnings.filterwarnings("ignore", message=".*feature will be removed.*")
            proto = _export_proto(RestoreGraph(model), _example_inputs(model, 2 if dynamic_batch else 1), opset,
                                  dynamic_batch, exporter)
    finally:
        model.train(was_training)
    written = {op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")}
    if written != {opset}:
        raise ValueError(f"the {exporter} exporter wrote opset {sorted(written)} instead of {opset} "
                         f"(try opset 18 or exporter='torchscript')")
    meta = {"codeformer.inputs": "image float32 (B,3,S,S) RGB in [-1,1]; w float32 (B,) fidelity per image",
            "codeformer.output": "restored float32 (B,3,S,S) about [-1,1], unclamped; AdaIN on",
            "codeformer.img_size": str(model.img_size), "codeformer.licence": LICENCE_NOTE}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    write_bytes(path, proto.SerializeToString())
    log.info("wrote %s (opset %d, %s exporter)", path, opset, exporter)
    return path


class OnnxRestorer:
    """Runs an exported graph with onnxruntime behind the same `restore(x, w)` contract as `CodeFormer`, so
    `codeformer.face.pipeline.Restorer` can use it.

    providers: onnxruntime execution providers, names or (name, options) (default: CPU). threads: intra-op
    threads (None: onnxruntime's default). A graph exported with a fixed batch of 1 is run one image at a time.
    """

    def __init__(self, path: str | os.PathLike[str], providers: Sequence[str | tuple[str, dict]] | None = None,
                 threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=list(providers or ["CPUExecutionProvider"]))
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {INPUT_IMAGE, INPUT_W}:
            raise ValueError(f"{self.path}: expected graph inputs 'image' and 'w', found {sorted(inputs)} "
                             f"(a graph without a w input cannot honour the fidelity weight)")
        shape = inputs[INPUT_IMAGE].shape  # [B, 3, S, S]; B is a name when dynamic
        self.img_size = int(shape[2])
        self.dynamic_batch = not isinstance(shape[0], int)

    def restore(self, x: torch.Tensor, w: float | torch.Tensor = 0.5, adain_latent: bool = True) -> torch.Tensor:
        """Aligned faces (B, 3, S, S) RGB in [-1, 1] → restored (B, 3, S, S) float32 on x's device.

        w: a float for every face or a (B,) tensor. AdaIN is part of the graph: adain_latent=False raises
        rather than being silently ignored.
        """
        if not adain_latent:
            raise ValueError(f"{self.path}: the ONNX graph has AdaIN built in; adain_latent=False is not possible")
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, self.img_size, self.img_size):
            raise ValueError(f"expected (B, 3, {self.img_size}, {self.img_size}), got {tuple(x.shape)}")
        image = x.detach().to("cpu", torch.float32).numpy()
        weights = np.broadcast_to(np.asarray(w.detach().cpu() if isinstance(w, torch.Tensor) else w,
                                             dtype=np.float32), (len(image),)).copy()
        if self.dynamic_batch:
            out = self._run(image, weights)
        else:
            out = np.concatenate([self._run(image[i:i + 1], weights[i:i + 1]) for i in range(len(image))])
        return torch.from_numpy(out).to(x.device)

    def _run(self, image: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT_IMAGE: np.ascontiguousarray(image), INPUT_W: weights})[0]


def check_onnx(model: CodeFormer, path: str | os.PathLike[str], ws: Iterable[float] = (0.0, 0.5, 1.0),
               batch: int = 2, x: torch.Tensor | None = None, threads: int | None = None) -> dict[float, float]:
    """Max |onnxruntime − torch| of the restored images, per w in `ws`.

    Torch runs `model.restore(x, w)` with w a plain float (the path users take; w = 0 skips the fusion blocks),
    onnxruntime the graph at `path` with w repeated over the batch. x: (B, 3, S, S) in [-1, 1]; None gives a
    seeded random batch of `batch` images.
    """
    if x is None:
        x, _ = _example_inputs(model, batch)
    runner = OnnxRestorer(path, threads=threads)
    diffs = {}
    for w in ws:
        expected = model.restore(x, float(w)).float().cpu()
        got = runner.restore(x.cpu(), float(w))
        diffs[float(w)] = float((got - expected).abs().max())
    return diffs
