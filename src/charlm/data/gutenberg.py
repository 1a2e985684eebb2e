"""Project Gutenberg's header and licence, found in any text and left out of what a model reads.

An e-book from Project Gutenberg opens with a header (the title, the licence's summary, the
producers) that ends at a line such as ``*** START OF THE PROJECT GUTENBERG EBOOK THE TIME
MACHINE ***``, and closes with the full licence after ``*** END OF THE PROJECT GUTENBERG EBOOK ...
***``: about 20 KB, the last 12 % of a 150 KB novel. A model trained on such a file learns the
licence, and its held-out end (the last 5 %) scores how well it predicts that licence instead of
the book. So training, evaluation and the explorer read the book alone (``--keep-boilerplate``
reads the file whole); the compressor reads bytes and keeps every one.

The markers, in the forms Project Gutenberg has used since the 1990s:

- the body starts after ``*** START OF THE/THIS PROJECT GUTENBERG EBOOK/E-BOOK/ETEXT ...`` (with or
  without the spaces), or in the oldest files after the small print's last line, ``*END*THE SMALL
  PRINT! ...``;
- it ends before ``*** END OF THE/THIS PROJECT GUTENBERG ...``, or before ``End of the Project
  Gutenberg EBook of ...`` / ``End of Project Gutenberg's ...``, which older files put first.

Only a text with a start marker in its opening, or whose first lines name Project Gutenberg, is
touched, so a novel that happens to contain such a sentence keeps it. The text streams through in
chunks: nothing here holds more than the opening and one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# How far into a file its header may reach: the longest "small print" headers of the 1990s are
# about 15 KB; a book's own text rarely names Project Gutenberg that early.
HEAD_CHARS = 64_000
# A marker line is short; a line longer than this is carried on in pieces (a text without newlines
# must not be held whole), and a marker is then looked for only at the next line's start.
LONGEST_LINE = 4096

# Every header names Project Gutenberg in its first line or two.
NAMED_WITHIN = 1000

_GUTENBERG = re.compile(r"project\s+gutenberg", re.IGNORECASE)
_START = re.compile(r"^[ \t]*(?:\*{3}[ \t]*START OF (?:THE |THIS )?PROJECT GUTENBERG|\*END\*THE SMALL PRINT!)"
                    r"[^\n]*(?:\n|$)", re.IGNORECASE | re.MULTILINE)
_END = re.compile(r"^[ \t]*(?:\*{3}[ \t]*END OF (?:THE |THIS )?PROJECT GUTENBERG"
                  r"|END OF (?:THE |THIS )?PROJECT GUTENBERG)", re.IGNORECASE | re.MULTILINE)


def body_start(head: str) -> int | None:
    """Where the book begins in the opening `head` of a text: just after its last start marker within
    HEAD_CHARS (the newer marker follows the small print in files that have both); 0 for a file
    without one whose first lines name Project Gutenberg (every header does, in its first line or
    two); None for a text that is no Gutenberg file."""
    starts = list(_START.finditer(head[:HEAD_CHARS]))
    if starts:
        return starts[-1].end()
    return 0 if _GUTENBERG.search(head[:NAMED_WITHIN]) else None


def _opening(chunks: Iterator[str]) -> str:
    """The first HEAD_CHARS characters or more (whole chunks), or the whole text if shorter."""
    parts, size = [], 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= HEAD_CHARS:
            break
    return "".join(parts)


def without_boilerplate(chunks: Iterable[str], left_out: list[int] | None = None) -> Iterator[str]:
    """The text of `chunks` without a Gutenberg header and licence (unchanged if it is no Gutenberg
    file). Appends to `left_out`, once the text is through, how many characters were left out."""
    chunks = iter(chunks)
    head = _opening(chunks)
    start = body_start(head)
    if start is None:
        yield head
        yield from chunks
        _tell(left_out, 0)
        return
    dropped, carry, at_line_start = start, "", True
    texts = _chain(head[start:], chunks)
    for chunk in texts:
        text = carry + chunk
        end = _END.search(text, 0 if at_line_start else text.find("\n") + 1 or len(text))
        if end:
            yield text[:end.start()]
            dropped += len(text) - end.start() + sum(len(rest) for rest in texts)
            _tell(left_out, dropped)
            return
        cut = text.rfind("\n") + 1  # the last line may be a marker cut in two: carried on
        if len(text) - cut > LONGEST_LINE:
            cut, at_line_start = len(text), False
        elif cut:
            at_line_start = True
        yield text[:cut]
        carry = text[cut:]
    yield carry
    _tell(left_out, dropped)


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _tell(left_out: list[int] | None, count: int) -> None:
    if left_out is not None:
        left_out.append(count)


_STAR_START = re.compile(r"^[ \t]*\*{3}[ \t]*START OF (?:THE |THIS )?PROJECT GUTENBERG[^\n]*$", re.I | re.M)
_STAR_END = re.compile(r"^[ \t]*\*{3}[ \t]*END OF (?:THE |THIS )?PROJECT GUTENBERG", re.I | re.M)


def between_stars(text: str) -> str:
    """The text between the ``*** START OF`` and ``*** END OF`` lines alone (the whole text where
    either is missing), without the blank lines and spaces around it: how the books of pg-authors
    were cut, which kept the older "End of the Project Gutenberg EBook" lines."""
    start = _STAR_START.search(text)
    end = _STAR_END.search(text, start.end() if start else 0)
    return text[start.end() if start else 0:end.start() if end else len(text)].strip()
