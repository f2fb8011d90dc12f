"""Hostile texts for the speech path: strings that crash, hang or balloon a TTS engine.

``HOSTILE`` is a list of ``(name, text)``; every text is valid JSON text (no lone surrogates)
and at most 2,000 characters, so the same corpus can be sent through the WebSocket protocol.
The unicode-category samples are generated from the running Python's ``unicodedata`` tables,
so they are deterministic for one Python version. Importing this module has no side effects
beyond building the list. See docs/robustness.md for what each family does to Piper/espeak-ng.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import unicodedata

__all__ = ["HOSTILE", "MAX_CHARS"]

MAX_CHARS = 2000

ZWJ = "\u200d"
VS16 = "\ufe0f"
FAMILY4 = ZWJ.join(["\U0001f468", "\U0001f469", "\U0001f467", "\U0001f466"])
FAMILY3 = ZWJ.join(["\U0001f468", "\U0001f469", "\U0001f467"])
# England's subdivision flag: a black flag, tag characters, cancel tag.
ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
SKIN_TONES = ["\U0001f44b" + chr(0x1F3FB + i) for i in range(5)]
FLAGS = "".join(
    "".join(chr(0x1F1E6 + ord(letter) - 65) for letter in code)
    for code in ["US", "GB", "FR", "DE", "JP", "CN", "BR", "IN", "ZA", "UA"]
)

_PAYLOAD = hashlib.sha512(b"voxwire").digest() * 12  # deterministic pseudo-random bytes


def _zalgo(text: str, marks_per_char: int) -> str:
    marks = [chr(c) for c in range(0x0300, 0x0370)]
    out = []
    for i, ch in enumerate(text):
        out.append(ch)
        out.extend(marks[(i * 7 + k) % len(marks)] for k in range(marks_per_char))
    return "".join(out)


def _category_samples() -> list[tuple[str, str]]:
    """Up to 300 code points of each general category (spaced), and a compact 120-point run."""
    by_cat: dict[str, list[str]] = {}
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue  # lone surrogates cannot travel in JSON text
        by_cat.setdefault(unicodedata.category(chr(cp)), []).append(chr(cp))
    out: list[tuple[str, str]] = []
    for cat in sorted(by_cat):
        chars = by_cat[cat]
        step = max(1, len(chars) // 300)
        sample = chars[::step][:300]
        out.append((f"category_{cat}_spaced", " ".join(sample)[: MAX_CHARS - 1]))
        out.append((f"category_{cat}_run", "".join(sample[:120])))
        # Each category glued between ordinary words: does one odd character break a sentence?
        out.append((f"category_{cat}_in_words", " ".join(f"word{c}word" for c in sample[:40])))
    return out


def _build() -> list[tuple[str, str]]:
    texts: list[tuple[str, str]] = [
        # Dotted single letters: espeak-ng's CheckDottedAbbrev() copies the letters into an
        # 80-byte stack buffer without a bound (crash at about 97 ASCII letters).
        ("dotted_A_98", "A." * 98),
        ("dotted_a_120", "a." * 120),
        ("dotted_US_50", "U.S." * 50),
        ("dotted_a_97", "a." * 97),
        ("dotted_a_200", "a." * 200),
        ("dotted_spaced_a_150", "a . " * 150),
        ("dotted_pairs_lower_50", "a.b. c.d. " * 50),
        ("dotted_e_acute_60", "é." * 60),
        ("dotted_cyrillic_60", "д." * 60),
        ("dotted_cjk_60", "中." * 60),
        ("dotted_alphabet_4", "A.B.C.D.E.F.G.H.I.J.K.L.M.N.O.P.Q.R.S.T.U.V.W.X.Y.Z." * 4),
        ("dotted_USA_spaced_60", "U.S.A. " * 60),
        ("dotted_initials_50", "J. R. R. " * 50),
        ("dotted_capital_space_150", "A. " * 150),
        ("dotted_zalgo_40", _zalgo("a.", 2) * 40),
        ("dotted_apostrophe_s", "u.s.a.'s " * 60),
        ("dotted_digits_100", "1.1." * 100),
        ("dot_pair_word", "beep.. foo.. hi.."),
        ("dots_400", "." * 400),
        ("ellipsis_400", "\u2026" * 400),
        ("abbrev_eg_100", "e.g. " * 100),
        ("abbrev_ie_run_100", "i.e." * 100),
        ("abbrev_dr_100", "Dr. " * 100),
        ("abbrev_etc_100", "etc. " * 100),
        ("abbrev_am_run_100", "a.m." * 100),
        # Emoji: espeak names each pictograph, so a ZWJ family becomes "man woman girl boy".
        ("zwj_family3_80", (FAMILY3 + " ") * 80),
        ("zwj_family4_80", FAMILY4 * 80),
        ("emoji_grin_400", "\U0001f600" * 400),
        ("emoji_in_sentence", "I love it \U0001f60d\U0001f60d\U0001f60d so much \U0001f525" * 8),
        ("skin_tones_80", "".join(SKIN_TONES) * 16),
        ("flags_40", FLAGS * 4),
        ("flag_england_40", ENGLAND * 40),
        ("keycaps_100", "".join(f"{d}{VS16}\u20e3" for d in "0123456789") * 10),
        ("variation_selectors", ("a" + VS16 + "\ufe0e") * 200),
        ("emoji_modifier_alone", "\U0001f3fd" * 200),
        # Digits and symbols.
        ("digits_400", "1" * 400),
        ("digits_100", "9" * 100),
        ("digit_cycle_400", "1234567890" * 40),
        ("huge_number_301", str(10**300)),
        ("grouped_number", ",".join(["123"] * 120)),
        ("long_decimal", "3." + "14159265358979323846" * 20),
        ("negative_exponent", "-1.5e-308 " * 40),
        ("money_run", "$" * 400),
        ("percent_run", "%" * 400),
        ("hash_run", "#" * 400),
        ("star_run", "*" * 400),
        ("dash_run", "-" * 400),
        ("underscore_run", "_" * 400),
        ("equals_run", "=" * 400),
        ("tilde_run", "~" * 400),
        ("bang_run", "!" * 400),
        ("interrobang_alternating", "?!" * 200),
        ("angle_pairs", "<>" * 200),
        ("paren_pairs", "()" * 200),
        ("mixed_symbols", "!@#$%^&*()_+-=[]{}|;':\",./<>?`~\\" * 12),
        ("piper_raw_phonemes", "[[" + "ʃ" * 500 + "]]"),
        ("piper_raw_phonemes_many", "[[a]] " * 300),
        ("box_drawing", "\u2500" * 400),
        ("braille", "\u283f" * 400),
        ("math_symbols", "\u2211\u222b\u2202\u221a\u221e\u2248\u2260\u2264\u2265" * 40),
        ("math_bold_hello", "\U0001d407\U0001d41e\U0001d425\U0001d425\U0001d428 " * 60),
        ("fullwidth", "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 " * 40),
        ("enclosed_numbers", "".join(chr(c) for c in range(0x2460, 0x24FF)) * 2),
        ("replacement_char", "\ufffd" * 400),
        ("noncharacters", "\ufffe\uffff\U0001fffe" * 100),
        ("private_use", "\ue000\uf8ff\U000f0000" * 100),
        ("bom_run", "\ufeff" * 400),
        ("soft_hyphens", ("hy\u00adphen\u00ad" * 100)),
        # Combining marks.
        ("zalgo_heavy", _zalgo("zalgo text is coming", 40)[:MAX_CHARS]),
        ("zalgo_light", _zalgo("hello world, how are you", 3)),
        ("marks_alone", "\u0301" * 400),
        # Scripts and direction.
        ("rtl_arabic", "مرحبا بالعالم، كيف حالك اليوم؟ " * 10),
        ("rtl_hebrew", "שלום עולם, מה שלומך היום? " * 10),
        ("bidi_override", "\u202eHello world\u202c \u202dolleh\u202c \u2067abc\u2069 " * 20),
        ("mixed_scripts", "Hello مرحبا שלום Привет 你好 こんにちは 안녕하세요 नमस्ते สวัสดี " * 4),
        ("cjk_no_spaces", "我们今天讨论的是一个非常重要的问题" * 20),
        ("japanese_no_spaces", "これは日本語の文章です。句読点があります。" * 15),
        ("thai_no_spaces", "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ" * 12),
        ("devanagari", "हिन्दी भाषा में लिखा गया वाक्य। " * 12),
        ("korean", "한국어 문장입니다. " * 30),
        # Controls and whitespace.
        ("nul_run", "\x00" * 400),
        ("nul_in_text", "hello\x00world\x00" * 40),
        ("ansi_escapes", "\x1b[31mred\x1b[0m \x1b[1;32mgreen\x1b[0m " * 20),
        ("bell_run", "\x07" * 400),
        ("crlf_run", "\r\n" * 400),
        ("tab_run", "\t" * 400),
        ("c1_controls", "".join(chr(c) for c in range(0x80, 0xA0)) * 10),
        ("delete_chars", "\x7f" * 400),
        ("line_para_separators", "line\u2028para\u2029" * 80),
        ("odd_spaces", "a\u00a0b\u2003c\u3000d\u200be\u2060f " * 60),
        # Long tokens.
        ("long_word_a", "a" * 1000),
        ("long_word_ab", "ab" * 500),
        ("long_word_caps", "ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 30),
        ("long_real_word", "pneumonoultramicroscopicsilicovolcanoconiosis " * 20),
        ("german_compound", "Donaudampfschifffahrtsgesellschaftskapitänsmütze " * 20),
        ("url_long", "https://example.com/" + "/".join(["path"] * 100) + "?q=" + "x" * 300),
        ("url_many", "see https://example.com/a?b=c&d=e#f and " * 20),
        ("base64_blob", base64.b64encode(_PAYLOAD[:1000]).decode()[:MAX_CHARS]),
        ("hex_blob", _PAYLOAD[:700].hex()[:MAX_CHARS]),
        ("sha256_list", " ".join(hashlib.sha256(bytes([i])).hexdigest() for i in range(25))),
        ("uuid_list", " ".join("123e4567-e89b-12d3-a456-426614174000" for _ in range(40))),
        ("email_list", " ".join(f"user{i}@example{i}.com" for i in range(60))),
        ("file_paths", " ".join(["/usr/local/lib/python3.11/site-packages/x.py"] * 30)),
        ("json_blob", '{"a": [1, 2, {"b": null}], "c": "d"}' * 40),
        ("code_snippet", "for (int i = 0; i < n; ++i) { x[i] = y[i] * 2; } " * 25),
        ("csv_no_spaces", ",".join(str(i) for i in range(400))[:MAX_CHARS]),
        ("hyphenated_chain", "-".join(["state-of-the-art"] * 60)),
        ("slash_chain", "/".join(["and"] * 400)[:MAX_CHARS]),
        # Ordinary text, for contrast: must still work.
        ("ordinary_english", "The quick brown fox jumps over the lazy dog. " * 10),
        ("ordinary_numbers", "On March 3, 2024, we paid $1,234.56 for 17 items at 9:30 a.m. " * 6),
        ("ordinary_abbrevs", "Dr. Smith, e.g. in the U.S., met Mr. Jones at 5 p.m. " * 7),
        ("ordinary_accents", "Café, naïve, façade, São Paulo, Zürich, Ångström. " * 8),
    ]
    texts.extend(_category_samples())
    return [(name, text[:MAX_CHARS]) for name, text in texts]


HOSTILE: list[tuple[str, str]] = _build()
