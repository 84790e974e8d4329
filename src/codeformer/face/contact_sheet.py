"""The HTML contact sheet of `codeformer restore --report html`: one card per face with the input crop, the
restored crop, the w-sweep strip if any, and the report's numbers and flags. Images are embedded as base64 JPEG,
so the page is one self-contained file; it is written atomically.

Cards are rendered as soon as a face is reported (`face_card`), so a long run keeps only small strings in memory.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np

from codeformer.atomic import write_text

__all__ = ["data_uri", "face_card", "render_page", "write_contact_sheet"]

THUMB = 256
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 16px; background: #f4f4f4; color: #222; }
h1 { font-size: 20px; margin: 0 0 6px 0; } .meta { font-size: 13px; color: #555; margin-bottom: 10px; }
.note { background: #ffe08a; border: 2px solid #c90; padding: 8px 12px; font-weight: 600; margin-bottom: 12px; }
.card { background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: 10px; margin-bottom: 12px;
        display: flex; gap: 12px; align-items: flex-start; flex-wrap: wrap; }
.card.flagged { border: 2px solid #d33; }
figure { margin: 0; text-align: center; font-size: 12px; } figure img { display: block; }
table { border-collapse: collapse; font-size: 13px; } td { padding: 2px 8px 2px 0; vertical-align: top; }
td.k { color: #666; } .flag { color: #fff; background: #d33; border-radius: 3px; padding: 1px 6px; margin-right: 4px; }
.ok { color: #fff; background: #393; border-radius: 3px; padding: 1px 6px; }
"""


def data_uri(rgb: np.ndarray, size: int | None = THUMB, quality: int = 90) -> str:
    """An H×W×3 uint8 RGB image as a `data:image/jpeg;base64,...` URI, resized to `size` px wide (None: as is)."""
    img = rgb
    if size is not None and img.shape[1] != size:
        height = max(1, round(img.shape[0] * size / img.shape[1]))
        img = cv2.resize(img, (size, height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding of a contact-sheet image failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _num(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def face_card(name: str, record: dict, cropped: np.ndarray, restored: np.ndarray,
              strip: np.ndarray | None = None) -> str:
    """One card (HTML fragment): `name` (image), the report `record` of one face, its 512 crops (uint8 RGB), and
    an optional sweep strip (uint8 RGB)."""
    ident = record["identity"]
    cons = record["consistency"]
    factors = ", ".join(f"{k} {v:.2f}" for k, v in record["w_auto_factors"].items())
    rows = [
        ("box", ", ".join(f"{v:.0f}" for v in record["box"])),
        ("detector", html.escape(str(record.get("detector", "unknown")))),
        ("detector score", _num(record["score"])),
        ("face size", f"{record['face_size']:.0f} px"),
        ("input sharpness", _num(record["input_sharpness"], 2)),
        ("input noise σ", _num(record["input_noise_sigma"], 2)),
        ("w used", _num(record["w"], 2)),
        ("w auto", f"{record['w_auto']:.2f} ({factors})"),
        ("identity in→out", "n/a" if ident is None else f"cos {ident['cosine']:.3f}, L2 {ident['l2']:.3f}"),
        ("consistency", f"PSNR-Y {_num(cons['psnr_y'], 2)} dB after blur σ {cons['blur_sigma']:.2f} "
                        f"(raw {_num(cons['psnr_y_raw'], 2)} dB)"),
    ]
    flags = "".join(f'<span class="flag">{html.escape(f)}</span>' for f in record["flags"]) or \
        '<span class="ok">no flags</span>'
    table = "".join(f'<tr><td class="k">{k}</td><td>{v}</td></tr>' for k, v in rows)
    figures = [f'<figure><img src="{data_uri(cropped)}" width="{THUMB}"><figcaption>input crop</figcaption></figure>',
               f'<figure><img src="{data_uri(restored)}" width="{THUMB}"><figcaption>restored</figcaption></figure>']
    strip_html = ""
    if strip is not None:
        strip_html = (f'<figure style="flex-basis:100%"><img src="{data_uri(strip, size=None)}">'
                      f'<figcaption>w sweep</figcaption></figure>')
    css = "card flagged" if record["flags"] else "card"
    title = f"{html.escape(name)} · face {record['index']}"
    return (f'<div class="{css}">{"".join(figures)}<div><b>{title}</b><div>{flags}</div>'
            f'<table>{table}</table></div>{strip_html}</div>')


def render_page(cards: list[str], summary: str, thresholds: dict[str, float], note: str | None = None,
                title: str = "codeformer restore — face report") -> str:
    """The whole page: title, optional highlighted `note`, summary line, thresholds, then the cards."""
    limits = ", ".join(f"{k} {v:g}" for k, v in thresholds.items())
    banner = f'<div class="note">{html.escape(note)}</div>' if note else ""
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{banner}"
            f'<div class="meta">{html.escape(summary)} · thresholds: {html.escape(limits)}</div>'
            + "".join(cards) + "</body></html>\n")


def write_contact_sheet(path: Path, cards: list[str], summary: str, thresholds: dict[str, float],
                        note: str | None = None) -> Path:
    """Render and write the page atomically to `path` (folder created); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, render_page(cards, summary, thresholds, note))
    return path
