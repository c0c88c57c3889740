"""Optional profiling of a measuring window: pyinstrument (sampling) or cProfile (deterministic)."""

from __future__ import annotations

import cProfile
import io
import pstats
from typing import Any

__all__ = ["WindowProfiler"]


class WindowProfiler:
    """``"pyinstrument:<path>"`` or ``"cprofile:<path>"``; a no-op for ``None``.

    pyinstrument runs with ``async_mode="disabled"``: it samples the one
    thread whatever task runs, which is what attributes CPU time when
    thousands of tasks interleave.
    """

    def __init__(self, spec: str | None) -> None:
        self.kind, _, self.path = (spec or "").partition(":")
        self._impl: Any = None

    def start(self) -> None:
        if self.kind == "pyinstrument":
            from pyinstrument import Profiler

            self._impl = Profiler(interval=0.0002, async_mode="disabled")
            self._impl.start()
        elif self.kind == "cprofile":
            self._impl = cProfile.Profile()
            self._impl.enable()

    def stop(self) -> None:
        if self._impl is None:
            return
        if self.kind == "pyinstrument":
            self._impl.stop()
            text = self._impl.output_text(unicode=True, color=False, show_all=False)
            with open(self.path, "w") as f:
                f.write(text)
            with open(self.path.rsplit(".", 1)[0] + ".html", "w") as f:
                f.write(self._impl.output_html())
        else:
            self._impl.disable()
            self._impl.dump_stats(self.path.rsplit(".", 1)[0] + ".prof")
            out = io.StringIO()
            stats = pstats.Stats(self._impl, stream=out)
            stats.sort_stats("tottime").print_stats(45)
            stats.sort_stats("cumulative").print_stats(45)
            with open(self.path, "w") as f:
                f.write(out.getvalue())
        self._impl = None
