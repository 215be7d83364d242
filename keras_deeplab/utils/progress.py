"""Progress of a loop over batches or files, fit for a terminal and a pipe.

On a terminal it is Keras' progress bar; when stdout is a file or a pipe
(CI logs, `nohup`, a notebook capturing output) Keras' bar writes one long
line of carriage returns and escape codes, so instead a plain line is
printed at each quarter of the work, with the seconds it has taken.
"""

import sys
import time

_QUARTERS = 4


class Progress:
    """`update(done)` after each item, `finish(done)` at the end.

    Args:
        total: int or None. Items expected (None: unknown).
        unit: str. What an item is ("batch", "image"), for the lines.
        verb: str. What is done to them ("evaluated"), for the lines.
    """

    def __init__(self, total, *, unit, verb):
        self.total, self.unit, self.verb = total, unit, verb
        self._start = time.perf_counter()
        self._bar = None
        self._next_line = 1
        if sys.stdout.isatty():
            import keras

            self._bar = keras.utils.Progbar(total, unit_name=unit)

    def update(self, done: int):
        if self._bar is not None:
            self._bar.update(done)
            return
        if not self.total:
            return
        if done * _QUARTERS >= self._next_line * self.total:
            self._line(done)
            self._next_line = done * _QUARTERS // self.total + 1

    def finish(self, done: int):
        if self._bar is not None:
            self._bar.update(done, finalize=True)
        elif not self.total or self._next_line <= _QUARTERS:
            self._line(done)

    def _line(self, done):
        of = f"/{self.total}" if self.total else ""
        unit = plural(self.unit) if done != 1 or self.total else self.unit
        seconds = time.perf_counter() - self._start
        print(f"{self.verb} {done}{of} {unit} ({seconds:.0f} s)", flush=True)


def plural(noun: str) -> str:
    """ "batch" -> "batches", "image" -> "images"."""
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def counted(count: int, noun: str) -> str:
    """ "1 image", "0 images", "3 batches": a count and its noun."""
    return f"{count} {noun if count == 1 else plural(noun)}"
