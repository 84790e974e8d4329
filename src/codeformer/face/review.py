"""`codeformer restore` with `--report`, `-w auto` or `--w-sweep`: the batch run of `face.batch`, plus per-face
reports and sweep strips.

Extra outputs under OUTDIR, for an input REL whose restored photo is OUT:
  OUT.report.json                  with --report: `report_faces` records, thresholds, input and output paths
  report.html                      with --report html: the contact sheet of every face of the run
  sweep/REL_NN.png                 with --w-sweep: input crop and one restoration per w, for face NN
Everything else (OUT, OUT.json, faces/, compare/) is written exactly as `face.batch.run_batch` writes it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from codeformer.atomic import write_text
from codeformer.data.images import Picture, write_image
from codeformer.face.autow import AutoWRestorer, sweep_strip
from codeformer.face.batch import (
    PER_FILE_ERRORS,
    BatchReport,
    OutputOptions,
    expand_inputs,
    one_line_error,
    plan_outputs,
    prepare_outdir,
    restore_file,
    sweep_temporaries,
)
from codeformer.face.contact_sheet import face_card, write_contact_sheet
from codeformer.face.pipeline import RestoreOptions, Restorer, RestoreResult, check_w
from codeformer.face.report import ReportThresholds, flag_summary, report_faces, thresholds_record
from codeformer.metrics.identity import IdentityEmbedder

log = logging.getLogger(__name__)

__all__ = ["ReviewOptions", "parse_sweep", "run_reviewed_batch"]

REPORT_KINDS = ("json", "html")


@dataclass(frozen=True)
class ReviewOptions:
    """report: None, "json" (OUT.report.json) or "html" (also report.html). auto_w: choose w per face.
    sweep: w values for the sweep strips (empty: none). note: a banner on the HTML page."""

    report: str | None = None
    auto_w: bool = False
    sweep: tuple[float, ...] = ()
    thresholds: ReportThresholds = field(default_factory=ReportThresholds)
    note: str | None = None

    def __post_init__(self) -> None:
        if self.report is not None and self.report not in REPORT_KINDS:
            raise ValueError(f"report must be one of {', '.join(REPORT_KINDS)}, got {self.report!r}")
        for w in self.sweep:
            check_w(w, "w-sweep values")


def parse_sweep(text: str) -> tuple[float, ...]:
    """"0,0.25,0.5" → (0.0, 0.25, 0.5); ValueError naming the bad item."""
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise ValueError(f"--w-sweep: {item!r} is not a number (expected e.g. 0,0.25,0.5,0.75,1)") from None
    return tuple(values)


class _Capture:
    """Made fresh for each file: forwards `restore` and keeps the result for the report."""

    def __init__(self, restorer: Restorer | AutoWRestorer) -> None:
        self.restorer = restorer
        self.result: RestoreResult | None = None

    def restore(self, image: Picture, options: RestoreOptions | None = None) -> RestoreResult:
        self.result = self.restorer.restore(image, options)
        return self.result


def _review_file(restorer: Restorer, result: RestoreResult, source: Path, rel: Path, out: Path, opts: RestoreOptions,
                 output: OutputOptions, review: ReviewOptions, embedder: IdentityEmbedder | None,
                 cards: list[str]) -> list[dict]:
    """Sweep strips, OUT.report.json and contact-sheet cards of one restored file; returns its face records."""
    strips = [sweep_strip(restorer, face, review.sweep, opts) for face in result.faces] if review.sweep else []
    for i, strip in enumerate(strips):
        target = output.outdir / "sweep" / rel.parent / f"{rel.stem}_{i:02d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_image(target, Picture(strip))
    if review.report is None:
        return []
    records = report_faces(result, embedder, review.thresholds)
    doc = {"input": str(source), "output": str(out), "thresholds": thresholds_record(review.thresholds),
           "auto_w": review.auto_w, "faces": records}
    write_text(out.with_name(out.name + ".report.json"), json.dumps(doc, indent=2) + "\n")
    if review.report == "html":
        for i, (face, record) in enumerate(zip(result.faces, records, strict=True)):
            cards.append(face_card(str(rel), record, face.cropped, face.restored, strips[i] if strips else None))
    return records


def run_reviewed_batch(restorer: Restorer, inputs: Iterable[str], opts: RestoreOptions, output: OutputOptions,
                       review: ReviewOptions, progress: bool = True,
                       embedder: IdentityEmbedder | None = None) -> tuple[BatchReport, str]:
    """`run_batch` with reports, automatic w and sweep strips as `review` asks. Returns the batch report and the
    flag summary line ("" without --report). `embedder` defaults to `IdentityEmbedder.load()` when reporting."""
    start = time.perf_counter()
    report = BatchReport()
    jobs, report.failures = expand_inputs(inputs, output.recursive, output.outdir)
    planned, unnamed = plan_outputs(jobs, output, (".json", ".report.json") if review.report else (".json",))
    report.failures += unnamed
    prepare_outdir(output.outdir)
    sweep_temporaries(planned, output)
    if review.report is not None and embedder is None:
        embedder = IdentityEmbedder.load()
    runner: Restorer | AutoWRestorer = AutoWRestorer(restorer) if review.auto_w else restorer
    cards: list[str] = []
    all_records: list[list[dict]] = []
    for source, rel, out in tqdm(planned, disable=not progress, unit="img", file=sys.stderr, desc="restore"):
        try:
            capture = _Capture(runner)
            report.faces += restore_file(capture, source, rel, out, opts, output)  # type: ignore[arg-type]
            report.images += 1
            if capture.result is None:
                raise RuntimeError(f"{source}: restore_file returned without restoring")
            all_records.append(_review_file(restorer, capture.result, source, rel, out, opts, output, review,
                                            embedder, cards))
        except PER_FILE_ERRORS as exc:
            reason = one_line_error(str(source), exc)
            log.warning("%s", reason)
            report.failures.append((str(source), reason))
    summary = flag_summary(all_records) if review.report is not None else ""
    if review.report == "html":
        page = write_contact_sheet(output.outdir / "report.html", cards, summary,
                                   thresholds_record(review.thresholds), review.note)
        summary += f" (contact sheet: {page})"
    report.seconds = time.perf_counter() - start
    return report, summary

