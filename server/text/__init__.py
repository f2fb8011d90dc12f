"""Text as an engine should hear it (sans-I/O): numbers, currency, dates, times, units and
abbreviations written out as words, with a map from the words back to what the client wrote.

``verbalize`` (verbalize.py: the scan, abbreviations, times, dates and other shapes of a
run of digits) is the entry point; ``amounts`` reads a number with what is written around
it (currency, %, units, ordinal suffixes, years), ``readings`` says each shape, ``numerals``
the numbers (num2words, Chinese numerals), ``lexicon``/``lexicon_romance`` hold each
language's words (format in ``tables``), ``context`` what they share, and ``spans`` the span
map. The rules and their limits are in docs/normalization.md.
"""

from server.text.spans import Edit, Part, Verbalized
from server.text.verbalize import ALL, PIPER, Category, for_piper, verbalize

__all__ = ["ALL", "PIPER", "Category", "Edit", "Part", "Verbalized", "for_piper", "verbalize"]
