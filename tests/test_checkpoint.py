"""Safe loading, strict key reports, formats and conversion (tiny models)."""

from __future__ import annotations

import collections

import pytest
import torch

from codeformer.checkpoint import (
    CheckpointError,
    codeformer_from_state_dict,
    convert,
    key_report,
    load_state_dict_strict,
    read_state_dict,
    save_state_dict,
)
from codeformer.cli import main
from codeformer.models.codeformer import CodeFormer
from tests.conftest import TINY_CODEFORMER


@pytest.fixture
def tiny_sd():
    torch.manual_seed(0)
    return CodeFormer(**TINY_CODEFORMER).state_dict()


@pytest.mark.parametrize("layout", ["params_ema", "params", "bare", "module_prefix"])
def test_read_pth_layouts(tmp_path, tiny_sd, layout):
    path = tmp_path / "m.pth"
    if layout == "bare":
        torch.save(tiny_sd, path)
    elif layout == "module_prefix":
        torch.save({"params": {f"module.{k}": v for k, v in tiny_sd.items()}}, path)
    else:
        torch.save({layout: tiny_sd, "other": {"x": torch.zeros(1)}}, path)
    sd = read_state_dict(path)
    assert list(sd) == list(tiny_sd)
    assert all(torch.equal(sd[k], tiny_sd[k]) for k in sd)


def test_params_ema_preferred_over_params(tmp_path, tiny_sd):
    other = {k: v + 1 for k, v in tiny_sd.items()}
    torch.save({"params": other, "params_ema": tiny_sd}, tmp_path / "m.pth")
    sd = read_state_dict(tmp_path / "m.pth")
    assert torch.equal(sd["position_emb"], tiny_sd["position_emb"])


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": {"a": torch.zeros(1)}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="evil.pth: refused"):
        read_state_dict(path)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("content,problem", [(b"", "not a readable"), (b"garbage" * 10, "not a readable")])
def test_unreadable_files(tmp_path, content, problem):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=problem):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="no such file"):
        read_state_dict(tmp_path / "missing.pth")


def test_strict_report_lists_missing_unexpected_and_wrong_shape(tiny_sd):
    model = CodeFormer(**TINY_CODEFORMER)
    sd = collections.OrderedDict(tiny_sd)
    sd.pop("feat_emb.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["position_emb"] = torch.zeros(3, 3)
    report = key_report(model, sd)
    assert "1 missing: feat_emb.bias" in report
    assert "1 unexpected: extra.weight" in report
    assert "1 wrong shape: position_emb (file (3, 3), model (64, 32))" in report
    with pytest.raises(CheckpointError, match="does not fit CodeFormer"):
        load_state_dict_strict(model, sd, "x.pth")
    assert key_report(model, tiny_sd) == ""


def test_safetensors_round_trip_and_convert(tmp_path, tiny_sd):
    save_state_dict(tiny_sd, tmp_path / "m.pth")
    assert convert(tmp_path / "m.pth", tmp_path / "m.safetensors") == len(tiny_sd)
    sd = read_state_dict(tmp_path / "m.safetensors")
    assert all(torch.equal(sd[k], tiny_sd[k]) for k in tiny_sd)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_convert_command(tmp_path, tiny_sd, capsys):
    torch.save({"params_ema": tiny_sd}, tmp_path / "in.pth")
    assert main(["convert", str(tmp_path / "in.pth"), str(tmp_path / "out.safetensors")]) == 0
    assert "out.safetensors" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "nope.pth"), str(tmp_path / "o.safetensors")]) == 1
    assert "nope.pth: no such file" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()


def test_codeformer_config_read_from_keys(tmp_path):
    # the inpainting release has a 512-entry codebook and fusion at 32/64/128 only
    model = CodeFormer(codebook_size=512, connect_list=(32, 64, 128))
    loaded = codeformer_from_state_dict(model.state_dict(), "inpainting.pth")
    assert loaded.quantize.codebook_size == 512 and loaded.connect_list == (32, 64, 128)


class SystemCall:
    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


class EvalCall:
    def __reduce__(self):
        return (eval, ("print('this must never run')",))


class PlainObject:
    pass


@pytest.mark.parametrize("payload, global_name", [(SystemCall(), "posix.system"), (EvalCall(), "eval"),
                                                   (PlainObject(), "PlainObject")])
def test_every_kind_of_pickled_payload_is_called_refused(tmp_path, capfd, payload, global_name):
    """torch words its refusal two ways ("Unsupported global" and "... whose module ... is blocked")."""
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": {"a": torch.zeros(1)}, "x": payload}, path)
    with pytest.raises(CheckpointError, match="evil.pth: refused to load: it holds a Python object") as info:
        read_state_dict(path)
    assert global_name.split(".")[-1] in str(info.value) and "corrupt" not in str(info.value)
    assert "this must never run" not in capfd.readouterr().out
