"""Choosing the runtime behind the face pipeline: PyTorch or onnxruntime (`--runtime torch|onnx`).

Both give an object with `restore(x, w, adain_latent=True)` for `codeformer.face.pipeline.Restorer`. The ONNX
graph comes from `--onnx PATH`, or else from `codeformer-<sha256 prefix of the .pth>.onnx` in the weights cache,
exported there from the resolved `codeformer.pth` the first time it is needed (about half a minute and ~6 GB of
memory on a CPU); the hash in the name keeps a graph from being reused for other weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from codeformer import weights

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")


def default_onnx_path(source: Path) -> Path:
    """Where the graph exported from the weight file `source` is cached: beside the cached weights."""
    return weights.weights_dir() / f"codeformer-{weights.file_sha256(source)[:12]}.onnx"


def _providers(device: str) -> list[str | tuple[str, dict[str, str]]]:
    """onnxruntime execution providers for `device`, best first, CPU last as the fallback.

    cuda / cuda:N: TensorRT first when this onnxruntime build has it (its engines are cached beside the weights,
    since building one takes minutes), then CUDA; mps: CoreML. A device whose provider is missing is an error
    rather than a silent CPU run.
    """
    try:
        import onnxruntime as ort
    except ModuleNotFoundError as exc:
        raise RuntimeError("onnxruntime is not installed: pip install 'codeformer[onnx]'") from exc

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    kind, _, index = device.partition(":")
    wanted = {"cuda": "CUDAExecutionProvider", "mps": "CoreMLExecutionProvider"}.get(kind)
    if wanted is None:
        raise ValueError(f"--runtime onnx: unknown device {device!r}")
    if wanted not in available:
        raise ValueError(f"--runtime onnx --device {device}: onnxruntime has no {wanted} here "
                         f"(available: {', '.join(available)}; pip install onnxruntime-gpu for CUDA)")
    if kind != "cuda":
        return [wanted, "CPUExecutionProvider"]
    device_id = {"device_id": index or "0"}
    chosen: list[str | tuple[str, dict[str, str]]] = []
    if "TensorrtExecutionProvider" in available:
        cache = weights.weights_dir() / "tensorrt"
        cache.mkdir(parents=True, exist_ok=True)
        chosen.append(("TensorrtExecutionProvider", {**device_id, "trt_engine_cache_enable": "True",
                                                     "trt_engine_cache_path": str(cache)}))
    return [*chosen, (wanted, device_id), "CPUExecutionProvider"]


def load_face_model(runtime: str = "torch", weights_path: str | None = None, onnx_path: str | None = None,
                    device: str = "cpu", progress: bool = True, precision: str = "fp32",
                    compile: bool = False) -> tuple[object, dict[str, object]]:
    """(model for the pipeline, a description for reports and GET /v1/models).

    runtime "torch": `load_codeformer` of `weights_path` (or $CODEFORMER_WEIGHTS, the cache, a download), run by
    a `runtime.TorchRunner` in `precision` (fp32: official outputs; bf16 / fp16: faster, see runtime.py), through
    `torch.compile` when `compile`. device: auto, cpu, cuda, cuda:N or mps ("auto" is resolved here).
    runtime "onnx": `OnnxRestorer` of `onnx_path`; without one, the cached export (made on first use).
    Raises ValueError for an unknown runtime or device, `weights.WeightsError` / OSError for missing files.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "onnx" and precision != "fp32":
        raise ValueError(f"--precision {precision} applies to the torch runtime only (the ONNX graph is fp32)")
    if runtime == "onnx" and compile:
        raise ValueError("--compile applies to the torch runtime only")
    from codeformer.runtime import pick_device

    device = str(pick_device(device))
    info: dict[str, object] = {"id": "codeformer", "runtime": runtime, "device": device, "img_size": 512,
                               "w_input": True, "licence": weights.describe("codeformer.pth")}
    if runtime == "onnx":
        from codeformer.onnx_export import OnnxRestorer

        providers = _providers(device)
        if onnx_path:
            path = Path(onnx_path)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such ONNX file (make one with `codeformer export-onnx`)")
        else:
            source = weights.resolve("codeformer.pth", path=weights_path, env_var="CODEFORMER_WEIGHTS",
                                     progress=progress)
            path = default_onnx_path(source)
            if not path.is_file():
                _export_default(source, path)
        model = OnnxRestorer(path, providers=providers)
        info.update(weights=str(path), img_size=model.img_size)
        return model, info
    from codeformer.checkpoint import load_codeformer
    from codeformer.runtime import TorchRunner

    path = weights.resolve("codeformer.pth", path=weights_path, env_var="CODEFORMER_WEIGHTS", progress=progress)
    info.update(weights=str(path), precision=precision, compile=compile)
    return TorchRunner(load_codeformer(path), device, precision, compile=compile), info


def _export_default(source: Path, target: Path) -> None:
    from codeformer.checkpoint import load_codeformer
    from codeformer.onnx_export import export_onnx

    log.warning("exporting %s to %s once (about half a minute)", source, target)
    export_onnx(load_codeformer(source), target)


@dataclass(frozen=True)
class ModelSpec:
    """How to load the face model (the arguments of `load_face_model`): small and picklable, so each cluster
    worker loads its own copy, and the driver can fingerprint the weights without loading them."""

    runtime: str = "torch"
    weights: str | None = None
    onnx: str | None = None
    device: str = "cpu"
    precision: str = "fp32"

    def load(self, progress: bool = False) -> object:
        """The model, as `load_face_model` gives it."""
        model, _ = load_face_model(self.runtime, self.weights, self.onnx, self.device, progress, self.precision)
        return model

    def check(self, progress: bool = True) -> None:
        """Load the weights once here, on the CPU, so that a missing or bad file is reported in one line before
        any cluster worker starts (each would fail alike). Raises what `load_face_model` raises."""
        if self.runtime == "onnx" and self.onnx:
            if not Path(self.onnx).is_file():
                raise FileNotFoundError(f"{self.onnx}: no such ONNX file (make one with `codeformer export-onnx`)")
            return
        from codeformer.checkpoint import load_codeformer

        load_codeformer(weights.resolve("codeformer.pth", path=self.weights, env_var="CODEFORMER_WEIGHTS",
                                        progress=progress))

    def identity(self, progress: bool = True) -> dict[str, object]:
        """What decides this model's outputs, for a resumable run's fingerprint: the runtime, the precision and
        the SHA-256 of the file run (the weights, or the ONNX graph given with --onnx; the default graph is
        exported from the weights, so their hash names it too). The device is left out: it changes rounding,
        not the restoration."""
        from codeformer.manifest import weights_sha256

        if self.runtime == "onnx" and self.onnx:
            return {"runtime": "onnx", "onnx_sha256": weights_sha256(self.onnx)}
        path = weights.resolve("codeformer.pth", path=self.weights, env_var="CODEFORMER_WEIGHTS", progress=progress)
        return {"runtime": self.runtime, "precision": self.precision, "weights_sha256": weights_sha256(path)}
