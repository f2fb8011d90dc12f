"""The words each language says numbers with (sans-I/O data): currencies, units, months,
fractions, abbreviations, and the words before a number that make it a year or a date.

English, German and Chinese are here, Spanish, French, Italian and Portuguese in
lexicon_romance.py (the table format is in tables.py). Languages with a ``Lexicon`` get
every rule of verbalize.py; another language num2words reads gets plain integers only
(``GENERIC``); see docs/normalization.md.
"""

from __future__ import annotations

from typing import Final

from server.text import tables as tab
from server.text.lexicon_romance import ES, FR, IT, PT
from server.text.tables import Lexicon, Money, Noun

__all__ = ["GENERIC", "LEXICONS", "Lexicon", "Money", "Noun"]

EN: Final = Lexicon(
    lang="en",
    minus="minus",
    plus="plus",
    point="point",
    to="to",
    ratio="to",
    percent="percent",
    and_cents="and",
    months=tab.months(
        "January February March April May June July August September October November December"
    ),
    money=tab.money("""
USD = dollar | dollars ; cent | cents
EUR = euro | euros ; cent | cents
GBP = pound | pounds ; penny | pence
JPY = yen | yen
CNY = yuan | yuan
"""),
    units=tab.units("""
km = kilometer | kilometers
kg = kilogram | kilograms
m = meter | meters
cm = centimeter | centimeters
mm = millimeter | millimeters
mph = mile per hour | miles per hour
km/h = kilometer per hour | kilometers per hour
m/s = meter per second | meters per second
°C = degree Celsius | degrees Celsius
°F = degree Fahrenheit | degrees Fahrenheit
° = degree | degrees
TB = terabyte | terabytes
GB = gigabyte | gigabytes
MB = megabyte | megabytes
KB = kilobyte | kilobytes
ms = millisecond | milliseconds
s = second | seconds
min = minute | minutes
h = hour | hours
g = gram | grams
mg = milligram | milligrams
l = liter | liters
ml = milliliter | milliliters
ft = foot | feet
mi = mile | miles
lb = pound | pounds
oz = ounce | ounces
kWh = kilowatt hour | kilowatt hours
kW = kilowatt | kilowatts
W = watt | watts
GHz = gigahertz | gigahertz
MHz = megahertz | megahertz
kHz = kilohertz | kilohertz
Hz = hertz | hertz
"""),
    fractions=tab.fractions("""
2 = half | halves
3 = third | thirds
4 = quarter | quarters
5 = fifth | fifths
6 = sixth | sixths
7 = seventh | sevenths
8 = eighth | eighths
9 = ninth | ninths
10 = tenth | tenths
"""),
    abbreviations=tab.table("""
Dr. = Doctor
Mr. = Mister
Mrs. = Missus
Ms. = Miz
Prof. = Professor
Jr. = Junior
Sr. = Senior
Mt. = Mount
Ave. = Avenue
vs. = versus
vs = versus
etc. = et cetera
e.g. = for example
i.e. = that is
approx. = approximately
"""),
    sentence_end_abbreviations=tab.words("etc. approx. Ave."),
    year_cues=tab.words(
        "in since from until till to by of before after year circa around during early late"
        " mid spring summer fall autumn winter january february march april may june july"
        " august september october november december"
    ),
    date_cues=tab.words(
        "on by until till from since before after due dated through thru"
        " monday tuesday wednesday thursday friday saturday sunday"
    ),
    ordinal_suffixes=("st", "nd", "rd", "th"),
)

DE: Final = Lexicon(
    lang="de",
    decimal_comma=True,
    minus="minus",
    plus="plus",
    point="Komma",
    to="bis",
    ratio="zu",
    percent="Prozent",
    and_cents="und",
    months=tab.months(
        "Januar Februar März April Mai Juni Juli August September Oktober November Dezember"
    ),
    money=tab.money("""
USD = Dollar | Dollar ; Cent | Cent
EUR = Euro | Euro ; Cent | Cent
GBP = Pfund | Pfund ; Penny | Pence
JPY = Yen | Yen
CNY = Yuan | Yuan
"""),
    units=tab.units("""
km = Kilometer | Kilometer
kg = Kilogramm | Kilogramm
m = Meter | Meter
cm = Zentimeter | Zentimeter
mm = Millimeter | Millimeter
mph = Meile pro Stunde | Meilen pro Stunde | f
km/h = Kilometer pro Stunde | Kilometer pro Stunde
m/s = Meter pro Sekunde | Meter pro Sekunde
°C = Grad Celsius | Grad Celsius
°F = Grad Fahrenheit | Grad Fahrenheit
° = Grad | Grad
TB = Terabyte | Terabyte
GB = Gigabyte | Gigabyte
MB = Megabyte | Megabyte
KB = Kilobyte | Kilobyte
ms = Millisekunde | Millisekunden | f
s = Sekunde | Sekunden | f
min = Minute | Minuten | f
h = Stunde | Stunden | f
g = Gramm | Gramm
mg = Milligramm | Milligramm
l = Liter | Liter
ml = Milliliter | Milliliter
kWh = Kilowattstunde | Kilowattstunden | f
kW = Kilowatt | Kilowatt
W = Watt | Watt
GHz = Gigahertz | Gigahertz
MHz = Megahertz | Megahertz
kHz = Kilohertz | Kilohertz
Hz = Hertz | Hertz
"""),
    fractions=tab.fractions("""
2 = halb | halbe
3 = Drittel | Drittel
4 = Viertel | Viertel
5 = Fünftel | Fünftel
6 = Sechstel | Sechstel
7 = Siebtel | Siebtel
8 = Achtel | Achtel
9 = Neuntel | Neuntel
10 = Zehntel | Zehntel
"""),
    abbreviations=tab.table("""
z.B. = zum Beispiel
z. B. = zum Beispiel
d.h. = das heißt
d. h. = das heißt
usw. = und so weiter
bzw. = beziehungsweise
ca. = circa
Nr. = Nummer
Dr. = Doktor
Prof. = Professor
evtl. = eventuell
ggf. = gegebenenfalls
inkl. = inklusive
vgl. = vergleiche
Hr. = Herr
"""),
    sentence_end_abbreviations=tab.words("usw. evtl. ggf."),
    year_cues=tab.words(
        "im jahr jahre jahres seit bis von vor nach ab um anfang ende mitte sommer winter"
        " herbst frühjahr frühling januar februar märz april mai juni juli august september"
        " oktober november dezember"
    ),
    date_cues=tab.words("am vom zum bis ab seit den dem"),
)

ZH: Final = Lexicon(
    lang="zh",
    joiner="",
    minus="负",
    plus="正",
    point="点",
    to="到",
    ratio="比",
    percent="百分之",  # said before the number
    money=tab.money("""
USD = 美元 | 美元
EUR = 欧元 | 欧元
GBP = 英镑 | 英镑
JPY = 日元 | 日元
CNY = 元 | 元
"""),
    units=tab.units("""
km = 公里
kg = 公斤
m = 米
cm = 厘米
mm = 毫米
mph = 英里每小时
km/h = 公里每小时
m/s = 米每秒
°C = 摄氏度
°F = 华氏度
° = 度
ms = 毫秒
s = 秒
min = 分钟
h = 小时
g = 克
mg = 毫克
l = 升
ml = 毫升
ft = 英尺
mi = 英里
lb = 磅
oz = 盎司
kWh = 千瓦时
kW = 千瓦
W = 瓦
GHz = 吉赫
MHz = 兆赫
kHz = 千赫
Hz = 赫兹
"""),
)

LEXICONS: Final = {lex.lang: lex for lex in (EN, DE, ES, FR, IT, PT, ZH)}
# Another language num2words reads: integers only (no separators, signs, or words around).
GENERIC: Final = Lexicon(lang="")
