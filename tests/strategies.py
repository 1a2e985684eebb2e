"""Hypothesis settings and strategies shared by the property tests of several modules.

Imported by the test files (pytest puts this folder on the import path); pytest collects nothing here.
"""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Derandomized and without an example database: every run draws the same cases, so a failure
# replays exactly, on any machine and in CI.
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Pieces that tend to break text handling, mixed with arbitrary code points (never surrogates,
# which no UTF-8 file can hold): line ends of every platform, control characters, Unicode
# whitespace and line separators, combining marks, CJK, emoji with joiners and flags, characters
# whose lower case is longer (İ), and the vocabulary's own special tokens.
PIECES = ["\r\n", "\r", "\n", "\t", "\x00", "\x1c", "\x7f", "\x85", "\u2028", "\u00a0", "\u3000",
          "e\u0301", "\u0301", "漢字", "想要有直升机", "😀", "👩\u200d👩\u200d👧", "🇫🇷", "İ", "ß", "ǅ",
          " ", "  ", "<unk>", "<eos>", "The Time-Machine,"]
texts = st.lists(st.one_of(st.characters(codec="utf-8"), st.sampled_from(PIECES)), max_size=40).map("".join)
