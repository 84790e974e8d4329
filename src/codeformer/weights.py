"""Released weight files: where they come from, where they are cached, and a verified offline-capable fetch.

Lookup order in `resolve`: an explicit path, then an environment variable chosen by the caller, then the
cache (`$CODEFORMER_HOME/weights`, else `$XDG_CACHE_HOME/codeformer/weights`, else
`~/.cache/codeformer/weights`), then a download. Downloads stream into a temporary file beside the target,
are checked for length, size and SHA-256, and only then moved into place with `os.replace`; a failed
transfer leaves nothing behind, and the `.part` file of a killed one is removed by the next download. Files
whose full hash is not published are trusted on first use: the hash
of the first good copy is written to `<file>.sha256` and every later use is checked against it.

`CODEFORMER_OFFLINE=1` (or `offline=True`) forbids all network access. `CODEFORMER_MIRROR=http://host[/prefix]`
replaces the origin (scheme and host) of every download URL.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from codeformer.atomic import remove_stale_temporaries, temp_path

logger = logging.getLogger(__name__)

__all__ = ["WEIGHTS", "WeightFile", "WeightsError", "cache_path", "cached_file_sha256", "describe", "file_sha256",
           "get", "home_dir", "is_cached", "is_offline", "resolve", "weights_dir"]

_RELEASE = "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/"
_SLAB = "S-Lab License 1.0 (non-commercial)"
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


class WeightsError(RuntimeError):
    """A weight file is missing, could not be fetched, or failed verification."""


@dataclass(frozen=True)
class WeightFile:
    """One released weight file.

    `sha256` is the full published/observed hash when known; `sha256_prefix` is a weaker check (the
    leading hex digits of the hash) used when only a prefix is known. With neither, the first download
    is trusted and its hash recorded.
    """

    name: str
    url: str
    size: int | None
    sha256: str | None
    licence: str
    what: str
    sha256_prefix: str | None = None


WEIGHTS: tuple[WeightFile, ...] = (
    WeightFile("codeformer.pth", _RELEASE + "codeformer.pth", 376_637_898,
               "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7", _SLAB,
               "CodeFormer restoration network (stage 3, params_ema)"),
    WeightFile("codeformer_colorization.pth", _RELEASE + "codeformer_colorization.pth", None, None, _SLAB,
               "CodeFormer fine-tuned for face colorization"),
    WeightFile("codeformer_inpainting.pth", _RELEASE + "codeformer_inpainting.pth", None, None, _SLAB,
               "CodeFormer fine-tuned for face inpainting"),
    WeightFile("vqgan_code1024.pth", _RELEASE + "vqgan_code1024.pth", None,
               "4d1c6741b3cffcbdc2cd1a12b2c3c2442282e042d5de66909cb643d4fa31b20f", _SLAB,
               "stage-1 VQGAN with a 1024-entry codebook (training asset)"),
    WeightFile("vqgan_discriminator.pth", _RELEASE + "vqgan_discriminator.pth", None, None, _SLAB,
               "stage-1 VQGAN discriminator (training asset)"),
    WeightFile("codeformer_stage2.pth", _RELEASE + "codeformer_stage2.pth", None, None, _SLAB,
               "stage-2 CodeFormer, w=0 (training asset)"),
    WeightFile("latent_gt_code1024.pth", _RELEASE + "latent_gt_code1024.pth", None, None, _SLAB,
               "ground-truth code indices of the FFHQ training set (training asset)"),
    WeightFile("detection_Resnet50_Final.pth", _RELEASE + "detection_Resnet50_Final.pth", None, None, _SLAB,
               "RetinaFace ResNet-50 face detector (facelib)"),
    WeightFile("parsing_parsenet.pth", _RELEASE + "parsing_parsenet.pth", None, None, _SLAB,
               "ParseNet face parsing network (facelib)"),
    # The official script fetches x2plus from the CodeFormer release; Real-ESRGAN's own v0.2.1 copy is
    # 67,061,725 bytes, sha256 49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb (downstream pins),
    # but no hash of the CodeFormer copy is published, so it is trusted on first use.
    WeightFile("RealESRGAN_x2plus.pth", _RELEASE + "RealESRGAN_x2plus.pth", None, None,
               "BSD-3-Clause (Real-ESRGAN)", "Real-ESRGAN x2 RRDBNet background / face upsampler"),
    WeightFile("RealESRGAN_x4plus.pth",
               "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth", 67_040_989,
               "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", "BSD-3-Clause (Real-ESRGAN)",
               "Real-ESRGAN x4 RRDBNet upsampler"),
    WeightFile("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", None, None,
               "BSD-3-Clause (torchvision)", "ImageNet VGG16 backbone for the LPIPS perceptual loss",
               sha256_prefix="397923af"),
    WeightFile("lpips_vgg_v0.1.pth",
               "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
               None, None, "BSD-2-Clause (LPIPS)", "LPIPS v0.1 linear heads for the VGG backbone"),
    WeightFile("pt_inception-2015-12-05-6726825d.pth",
               "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth",
               None, None, "Apache-2.0 (pytorch-fid; TF Inception 2015-12-05)",
               "FID InceptionV3 (pool3 features) in the pytorch-fid layout", sha256_prefix="6726825d"),
)


def get(name: str) -> WeightFile:
    """Return the table entry called `name`, or raise `WeightsError` listing the known names."""
    for entry in WEIGHTS:
        if entry.name == name:
            return entry
    known = ", ".join(w.name for w in WEIGHTS)
    raise WeightsError(f"unknown weight file {name!r}; known files: {known}")


def home_dir() -> Path:
    """The codeformer cache folder: `$CODEFORMER_HOME`, else `$XDG_CACHE_HOME/codeformer`, else
    `~/.cache/codeformer`."""
    if os.environ.get("CODEFORMER_HOME"):
        return Path(os.environ["CODEFORMER_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "codeformer"
    return Path.home() / ".cache" / "codeformer"


def weights_dir() -> Path:
    """The folder that holds cached weight files."""
    return home_dir() / "weights"


def cache_path(name: str) -> Path:
    """Full path where the weight file `name` is (or would be) cached."""
    return weights_dir() / get(name).name


def is_cached(name: str) -> bool:
    """True if the weight file `name` is present in the cache (not verified)."""
    return cache_path(name).is_file()


def is_offline(offline: bool | None = None) -> bool:
    """True if `offline` is True or the environment sets `CODEFORMER_OFFLINE` to a true value."""
    env = os.environ.get("CODEFORMER_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return bool(offline) or env


def describe(name: str) -> str:
    """One-line licence notice for the weight file `name`, to print when it is loaded."""
    w = get(name)
    return f"{w.name}: {w.what}; licence: {w.licence}; source: {w.url}"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file at `path`."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cached_file_sha256(path: str | os.PathLike[str]) -> str:
    """`file_sha256` of `path`, computed once per (resolved path, size, mtime): a 376 MB weight file is hashed
    once per process however many videos or resumes ask for it."""
    path = Path(path).resolve()
    st = path.stat()
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def _source_url(entry: WeightFile, url: str | None) -> str:
    if url:
        return url
    mirror = os.environ.get("CODEFORMER_MIRROR", "").strip()
    if not mirror:
        return entry.url
    parts = urllib.parse.urlsplit(entry.url)
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def _hint(target: Path, url: str, env_var: str | None) -> str:
    how = "pass --weights PATH" + (f" or set {env_var}=PATH" if env_var else "")
    return f"download it by hand from {url} and put it at {target}, or {how}"


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_stamp(path: Path) -> str | None:
    stamp = _stamp(path)
    if not stamp.is_file():
        return None
    text = stamp.read_text(encoding="ascii").split()
    return text[0].lower() if text else None


def _write_stamp(path: Path, digest: str) -> None:
    tmp = temp_path(path.with_name(path.name + ".sha256"), suffix=".part")
    try:
        with open(tmp, "x", encoding="ascii") as f:
            f.write(f"{digest}  {path.name}\n")
        os.replace(tmp, _stamp(path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_digest(entry: WeightFile, digest: str, size: int) -> str | None:
    """Return a description of what is wrong with a file of this digest and size, or None."""
    if entry.size is not None and size != entry.size:
        return f"size is {size} bytes, expected {entry.size}"
    if entry.sha256 is not None and digest != entry.sha256.lower():
        return f"sha256 is {digest}, expected {entry.sha256}"
    if entry.sha256_prefix is not None and not digest.startswith(entry.sha256_prefix.lower()):
        return f"sha256 is {digest}, expected one starting with {entry.sha256_prefix}"
    return None


def _verify_cached(entry: WeightFile, path: Path, url: str, env_var: str | None) -> None:
    digest = file_sha256(path)
    problem = _check_digest(entry, digest, path.stat().st_size)
    if problem is None and entry.sha256 is None:
        recorded = _read_stamp(path)
        if recorded is None:
            logger.info("%s: no recorded hash, trusting this copy (sha256 %s)", entry.name, digest)
            try:
                _write_stamp(path, digest)
            except OSError as exc:
                logger.warning("%s: could not record its hash beside it (%s)", entry.name, exc)
        elif recorded != digest:
            problem = f"sha256 is {digest}, but {_stamp(path).name} recorded {recorded} at first use"
    if problem is not None:
        raise WeightsError(f"{entry.name}: cached copy at {path} failed verification ({problem}); delete it "
                           f"to download again, or {_hint(path, url, env_var)}")


def _download(entry: WeightFile, url: str, target: Path, env_var: str | None, progress: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent, time.time())  # what a killed download left
    tmp = temp_path(target, suffix=".part")
    hasher = hashlib.sha256()
    total = 0
    done = False
    logger.info("downloading %s from %s", entry.name, url)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "codeformer-weights/0.1"})
        with open(tmp, "xb") as out, urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:
            header = resp.headers.get("Content-Length")
            expected = int(header) if header and header.isdigit() else entry.size
            if header and entry.size is not None and expected != entry.size:
                raise WeightsError(f"{entry.name}: {url} announces {expected} bytes, expected {entry.size} "
                                   f"(wrong file?); {_hint(target, url, env_var)}")
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=entry.name,
                      file=sys.stderr, disable=not progress, leave=False) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    total += len(chunk)
                    bar.update(len(chunk))
            if header and header.isdigit() and total != int(header):
                raise WeightsError(f"{entry.name}: connection dropped after {total} of {header} bytes "
                                   f"from {url}; {_hint(target, url, env_var)}")
        digest = hasher.hexdigest()
        problem = _check_digest(entry, digest, total)
        if problem is not None:
            raise WeightsError(f"{entry.name}: download from {url} is corrupt or not the expected file "
                               f"({problem}); {_hint(target, url, env_var)}")
        os.replace(tmp, target)
        done = True
        if entry.sha256 is None:
            _write_stamp(target, digest)
        logger.info("%s: saved to %s (sha256 %s)", entry.name, target, digest)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"{entry.name}: HTTP {exc.code} {exc.reason} from {url}; "
                           f"{_hint(target, url, env_var)}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(f"{entry.name}: download from {url} failed ({reason}); "
                           f"{_hint(target, url, env_var)}") from exc
    finally:
        if not done:
            tmp.unlink(missing_ok=True)


def resolve(name: str, path: str | os.PathLike[str] | None = None, env_var: str | None = None,
            offline: bool | None = None, progress: bool = True, url: str | None = None) -> Path:
    """Return a local path to the weight file `name`, downloading it if needed.

    Order: `path` (must exist; not hash-checked, it is the user's own file), then the environment
    variable `env_var` if given and set (same rule), then the verified cache, then a download from `url`
    (default: the table URL, with its origin replaced by `$CODEFORMER_MIRROR` if set). In offline mode
    (`offline=True` or `CODEFORMER_OFFLINE=1`) no download is attempted. Raises `WeightsError` with a
    one-line message saying what went wrong and where to put the file by hand.
    """
    entry = get(name)
    target = weights_dir() / entry.name
    source = _source_url(entry, url)
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise WeightsError(f"{entry.name}: the given weights path {explicit} does not exist or is not "
                               f"a file; fix the path, or drop it to use the cached copy at {target}")
        return explicit
    if env_var and os.environ.get(env_var):
        from_env = Path(os.environ[env_var]).expanduser()
        if not from_env.is_file():
            raise WeightsError(f"{entry.name}: {env_var}={from_env} does not exist or is not a file; "
                               f"fix or unset {env_var} to use the cached copy at {target}")
        return from_env
    if target.is_file():
        _verify_cached(entry, target, source, env_var)
        return target
    if is_offline(offline):
        raise WeightsError(f"{entry.name}: not found at {target} and offline mode is on "
                           f"(CODEFORMER_OFFLINE or offline=True); {_hint(target, source, env_var)}")
    _download(entry, source, target, env_var, progress)
    return target
