"""A trained run taken out of charlm: as a web page that writes with it in the browser, offline
(:mod:`.page`), or as an ONNX graph for other runtimes (:mod:`.onnx`). ``charlm export RUN OUT``
picks by OUT's suffix."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import Run, load

__all__ = ["FORMATS", "export"]

FORMATS = {".html": "a page that writes with the model in the browser", ".onnx": "an ONNX graph"}


def export(run: str | Path | Run, out: str | Path, *, which: str = "best") -> Path:
    """Write `run` (a folder, a name such as ``"english"``, or a loaded :class:`Run`) to `out`, as the
    format its suffix names (:data:`FORMATS`); returns `out`."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        choices = ", ".join(f"{s} ({what})" for s, what in FORMATS.items())
        raise ValueError(f"{out}: charlm exports to {choices}; name the file with one of these suffixes")
    loaded = run if isinstance(run, Run) else load(run, which=which)
    if loaded.model.config.bidirectional:
        raise ValueError(f"{loaded.path}: a bidirectional run reads the text after each token too, so it "
                         "cannot write text: there is nothing to export for generation")
    if suffix == ".html":
        from .page import write_page

        write_page(loaded, out)
    else:
        from .onnx import write_onnx

        write_onnx(loaded, out)
    return out
