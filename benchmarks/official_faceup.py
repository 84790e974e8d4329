"""The official --face_upsample paste path against the parity kit, with the real Real-ESRGAN x2 (kit weights).

Not in the test suite: the upsampler's 512² pass (tile 400, pad 40) takes about 75 s on 2 idle CPU threads. Prints
how many values of the upsampled face (every second row and column, which the kit stores) and of the final s = 2
image differ from the official outputs, and by how much; the kit's tolerance for Real-ESRGAN's 8-bit output is
1 level where the float value sits at a rounding tie.

    .venv/bin/python benchmarks/official_faceup.py
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from codeformer.face import official
from codeformer.face.parsing import parse_mask
from codeformer.upsampler import load_realesrgan

KIT = Path(__file__).resolve().parents[2] / "shared" / "parity"


def main() -> None:
    spec = importlib.util.spec_from_file_location("fill_weights", KIT / "fill_weights.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    with np.load(KIT / "pipeline" / "reference_pipeline.npz") as z:
        ref = {k: z[k] for k in z.files}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sr.pth"
        torch.save({"params_ema": fill.fill_state_dict(str(KIT / "pipeline" / "keys_realesrgan_x2plus.json"))}, path)
        upsampler = load_realesrgan(path)
    faceup = np.ascontiguousarray(upsampler.enhance(ref["fh_restored_bgr_u8"][..., ::-1], 2)[..., ::-1])
    diff = np.abs(faceup[::2, ::2].astype(int) - ref["fh_faceup_u8_stride2"])
    print(f"upsampled face (stride 2): {int((diff > 0).sum())} of {diff.size} values differ, max {diff.max()}")
    out = official.paste_faces(ref["fh_bg_realesrgan_s2_u8"], [faceup], [ref["fh_inverse_affine_s2"]], 2,
                               [parse_mask(ref["fh_faceup_parse_argmax_u8"], np.float64)], face_upsampled=True)
    x0, y0, x1, y1 = ref["fh_paste_s2_parse_bg_faceup_box_xyxy"]
    expected = ref["fh_bg_realesrgan_s2_u8"].copy()
    expected[y0:y1, x0:x1] = ref["fh_paste_s2_parse_bg_faceup_crop_u8"]
    diff = np.abs(out.astype(int) - expected)
    print(f"s2_parse_bg_faceup image: {int((diff > 0).sum())} of {diff.size} values differ, max {diff.max()}")
    meta = json.loads(str(ref["meta_json"]))
    print("matrix after the paste equals the official:", np.array_equal(
        official.paste_matrix(ref["fh_inverse_affine_s2"], 2, face_upsampled=True),
        np.array(meta["face_restore_helper"]["cases"]["s2_parse_bg_faceup"]["inverse_affine_after_paste"])))


if __name__ == "__main__":
    main()
