"""Spanish, French, Italian and Portuguese words for numbers (sans-I/O data; the format is
in tables.py, the rules in docs/normalization.md)."""

from __future__ import annotations

from typing import Final

from server.text import tables as tab
from server.text.tables import Lexicon

__all__ = ["ES", "FR", "IT", "PT"]

ES: Final = Lexicon(
    lang="es",
    decimal_comma=True,
    minus="menos",
    plus="más",
    point="coma",
    to="a",
    ratio="a",
    percent="por ciento",
    and_cents="con",
    months=tab.months(
        "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre"
    ),
    money=tab.money("""
USD = dólar | dólares ; centavo | centavos
EUR = euro | euros ; céntimo | céntimos
GBP = libra | libras | f ; penique | peniques
JPY = yen | yenes
CNY = yuan | yuanes
"""),
    units=tab.units("""
km = kilómetro | kilómetros
kg = kilogramo | kilogramos
m = metro | metros
cm = centímetro | centímetros
mm = milímetro | milímetros
mph = milla por hora | millas por hora | f
km/h = kilómetro por hora | kilómetros por hora
m/s = metro por segundo | metros por segundo
°C = grado Celsius | grados Celsius
°F = grado Fahrenheit | grados Fahrenheit
° = grado | grados
TB = terabyte | terabytes
GB = gigabyte | gigabytes
MB = megabyte | megabytes
KB = kilobyte | kilobytes
ms = milisegundo | milisegundos
s = segundo | segundos
min = minuto | minutos
h = hora | horas | f
g = gramo | gramos
mg = miligramo | miligramos
l = litro | litros
ml = mililitro | mililitros
kWh = kilovatio hora | kilovatios hora
kW = kilovatio | kilovatios
W = vatio | vatios
GHz = gigahercio | gigahercios
MHz = megahercio | megahercios
kHz = kilohercio | kilohercios
Hz = hercio | hercios
"""),
    fractions=tab.fractions("""
2 = medio | medios
3 = tercio | tercios
4 = cuarto | cuartos
5 = quinto | quintos
6 = sexto | sextos
7 = séptimo | séptimos
8 = octavo | octavos
9 = noveno | novenos
10 = décimo | décimos
"""),
    abbreviations=tab.table("""
Sr. = señor
Sra. = señora
Srta. = señorita
Dr. = doctor
Dra. = doctora
etc. = etcétera
Ud. = usted
Uds. = ustedes
p. ej. = por ejemplo
aprox. = aproximadamente
"""),
    sentence_end_abbreviations=tab.words("etc."),
    date_cues=tab.words("el del al hasta desde día para"),
    ordinal_suffixes=("º", "ª", ".º", ".ª"),
)

FR: Final = Lexicon(
    lang="fr",
    decimal_comma=True,
    space_groups=True,
    minus="moins",
    plus="plus",
    point="virgule",
    to="à",
    ratio="à",
    percent="pour cent",
    and_cents="et",
    months=tab.months(
        "janvier février mars avril mai juin juillet août septembre octobre novembre décembre"
    ),
    money=tab.money("""
USD = dollar | dollars ; cent | cents
EUR = euro | euros ; centime | centimes
GBP = livre | livres | f ; penny | pence
JPY = yen | yens
CNY = yuan | yuans
"""),
    units=tab.units("""
km = kilomètre | kilomètres
kg = kilogramme | kilogrammes
m = mètre | mètres
cm = centimètre | centimètres
mm = millimètre | millimètres
mph = mile par heure | miles par heure
km/h = kilomètre par heure | kilomètres par heure
m/s = mètre par seconde | mètres par seconde
°C = degré Celsius | degrés Celsius
°F = degré Fahrenheit | degrés Fahrenheit
° = degré | degrés
To = téraoctet | téraoctets
Go = gigaoctet | gigaoctets
Mo = mégaoctet | mégaoctets
Ko = kilooctet | kilooctets
TB = téraoctet | téraoctets
GB = gigaoctet | gigaoctets
MB = mégaoctet | mégaoctets
KB = kilooctet | kilooctets
ms = milliseconde | millisecondes | f
s = seconde | secondes | f
min = minute | minutes | f
h = heure | heures | f
g = gramme | grammes
mg = milligramme | milligrammes
l = litre | litres
ml = millilitre | millilitres
kWh = kilowattheure | kilowattheures
kW = kilowatt | kilowatts
W = watt | watts
GHz = gigahertz | gigahertz
MHz = mégahertz | mégahertz
kHz = kilohertz | kilohertz
Hz = hertz | hertz
"""),
    fractions=tab.fractions("""
2 = demi | demis
3 = tiers | tiers
4 = quart | quarts
5 = cinquième | cinquièmes
6 = sixième | sixièmes
7 = septième | septièmes
8 = huitième | huitièmes
9 = neuvième | neuvièmes
10 = dixième | dixièmes
"""),
    abbreviations=tab.table("""
M. = monsieur
MM. = messieurs
Mme = madame
Mmes = mesdames
Mlle = mademoiselle
Dr = docteur
Dr. = docteur
etc. = et cetera
p. ex. = par exemple
env. = environ
"""),
    sentence_end_abbreviations=tab.words("etc."),
    date_cues=tab.words("le du au dès depuis avant après"),
    ordinal_suffixes=("er", "re", "ère", "ème", "eme", "e", "è"),
)

IT: Final = Lexicon(
    lang="it",
    decimal_comma=True,
    minus="meno",
    plus="più",
    point="virgola",
    to="a",
    ratio="a",
    percent="per cento",
    and_cents="e",
    months=tab.months(
        "gennaio febbraio marzo aprile maggio giugno"
        " luglio agosto settembre ottobre novembre dicembre"
    ),
    money=tab.money("""
USD = dollaro | dollari ; centesimo | centesimi
EUR = euro | euro ; centesimo | centesimi
GBP = sterlina | sterline | f ; penny | penny
JPY = yen | yen
CNY = yuan | yuan
"""),
    units=tab.units("""
km = chilometro | chilometri
kg = chilogrammo | chilogrammi
m = metro | metri
cm = centimetro | centimetri
mm = millimetro | millimetri
mph = miglio orario | miglia orarie
km/h = chilometro orario | chilometri orari
m/s = metro al secondo | metri al secondo
°C = grado Celsius | gradi Celsius
°F = grado Fahrenheit | gradi Fahrenheit
° = grado | gradi
TB = terabyte | terabyte
GB = gigabyte | gigabyte
MB = megabyte | megabyte
KB = kilobyte | kilobyte
ms = millisecondo | millisecondi
s = secondo | secondi
min = minuto | minuti
h = ora | ore | f
g = grammo | grammi
mg = milligrammo | milligrammi
l = litro | litri
ml = millilitro | millilitri
kWh = chilowattora | chilowattora
kW = chilowatt | chilowatt
W = watt | watt
GHz = gigahertz | gigahertz
MHz = megahertz | megahertz
kHz = kilohertz | kilohertz
Hz = hertz | hertz
"""),
    fractions=tab.fractions("""
2 = mezzo | mezzi
3 = terzo | terzi
4 = quarto | quarti
5 = quinto | quinti
6 = sesto | sesti
7 = settimo | settimi
8 = ottavo | ottavi
9 = nono | noni
10 = decimo | decimi
"""),
    abbreviations=tab.table("""
Sig. = signor
Sig.ra = signora
Sig.na = signorina
Dott. = dottor
Dott.ssa = dottoressa
Prof. = professor
ecc. = eccetera
Avv. = avvocato
Ing. = ingegner
"""),
    sentence_end_abbreviations=tab.words("ecc."),
    date_cues=tab.words("il dal al fino entro del"),
    ordinal_suffixes=("º", "ª", ".º", ".ª"),
)

PT: Final = Lexicon(
    lang="pt",
    decimal_comma=True,
    minus="menos",
    plus="mais",
    point="vírgula",
    to="a",
    ratio="a",
    percent="por cento",
    and_cents="e",
    months=tab.months(
        "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro"
    ),
    money=tab.money("""
USD = dólar | dólares ; cêntimo | cêntimos
EUR = euro | euros ; cêntimo | cêntimos
GBP = libra | libras | f ; péni | pence
JPY = iene | ienes
CNY = yuan | yuans
"""),
    units=tab.units("""
km = quilómetro | quilómetros
kg = quilograma | quilogramas
m = metro | metros
cm = centímetro | centímetros
mm = milímetro | milímetros
mph = milha por hora | milhas por hora | f
km/h = quilómetro por hora | quilómetros por hora
m/s = metro por segundo | metros por segundo
°C = grau Celsius | graus Celsius
°F = grau Fahrenheit | graus Fahrenheit
° = grau | graus
TB = terabyte | terabytes
GB = gigabyte | gigabytes
MB = megabyte | megabytes
KB = kilobyte | kilobytes
ms = milissegundo | milissegundos
s = segundo | segundos
min = minuto | minutos
h = hora | horas | f
g = grama | gramas
mg = miligrama | miligramas
l = litro | litros
ml = mililitro | mililitros
kWh = quilowatt-hora | quilowatts-hora
kW = quilowatt | quilowatts
W = watt | watts
GHz = gigahertz | gigahertz
MHz = megahertz | megahertz
kHz = quilohertz | quilohertz
Hz = hertz | hertz
"""),
    fractions=tab.fractions("""
2 = meio | meios
3 = terço | terços
4 = quarto | quartos
5 = quinto | quintos
6 = sexto | sextos
7 = sétimo | sétimos
8 = oitavo | oitavos
9 = nono | nonos
10 = décimo | décimos
"""),
    abbreviations=tab.table("""
Sr. = senhor
Sra. = senhora
Dr. = doutor
Dra. = doutora
etc. = et cetera
p. ex. = por exemplo
aprox. = aproximadamente
"""),
    sentence_end_abbreviations=tab.words("etc."),
    date_cues=tab.words("em dia até desde"),
    ordinal_suffixes=("º", "ª", ".º", ".ª"),
)
