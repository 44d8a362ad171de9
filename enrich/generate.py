"""Deterministic generator of realistic French bank transactions (``id,amount,wording``).

The generator produces CSV files shaped like the original 50-row sample
(``PRLV SEPA ...``, ``CARTE 06/10/21 ...``, ``VIR SEPA ...``, ``CHEQUE 1302257`` ...)
at any volume, for tests, the bundled sample and the benchmark.  It is fully
vectorized (numpy random draws + pyarrow compute string kernels, no per-row Python
loop) and streams the file chunk by chunk, so memory stays bounded by one chunk.

Regenerate the bundled sample with exactly::

    enrich generate --rows 800 --out data/transactions.csv --seed 42 --malformed 4 --duplicates 3

Output format
-------------
* Header ``id,amount,wording``; ``\\n`` line endings; UTF-8.  A wording is quoted
  (RFC 4180, inner ``"`` doubled) only when it contains a comma, a double quote or a
  line break; ids and amounts are never quoted.
* **ids**: valid rows carry the sequential ids ``1..rows`` in file order (unique,
  positive).  Malformed lines use invalid ids or ids above ``rows``; duplicates
  repeat existing ids (see below).
* **amounts**: integer cents printed either in the short form of the reference
  sample (``-327.7``, ``300``, ``0``, ``-283.66``) or with two fixed decimals
  (``300.00``, ``-0.01``).  The mix is mostly uniform in -500..+500, some larger
  amounts (up to 20,000), some tiny ones, round ones, and about 5 % of exact band
  boundaries ``300.00, 300.01, 299.99, 0.00, 0.01, -0.01, -200.00, -200.01, -199.99``.
  Inside every block of :data:`BLOCK_ROWS` rows the boundary rows cycle through all
  nine values, so even a few hundred rows exercise every boundary.
* **wordings**: 50 templates.  Each row draws a *tag form* first:

  - ~40 % exactly one distinct tag (TATA, TOTO, TUTU, TAXI) as a whole word, in
    upper/title/lower case, sometimes repeated (``TOTO ... TOTO`` is still one
    distinct tag) or next to a bigger word that merely contains a tag;
  - ~4 % two different tags (ambiguous);
  - ~6 % a tag only inside a bigger word (``TOTOCORP``, ``TAXIS``, ``TATAMI``...),
    which substring matching tags but whole-word matching must not;
  - the rest no tag at all.

  Tags are always delimited by spaces or the string ends (never by punctuation or
  digits), so whitespace tokenizers and ``\\b`` regexes agree.  Tags are never
  accented; other words sometimes are (``Prélèvement``, ``Réf``, ``Société Générale``).
  A few percent of wordings are lower- or title-cased; some contain commas and double
  quotes (CSV quoting), a trailing space or runs of spaces.
* ``--malformed K`` inserts K malformed lines at deterministic positions, cycling
  through: quoted comma amount ``"12,50"``, id ``-4``, 2 fields, amount ``abc``, id
  ``x1``, 4 fields, amount ``1e3``, id ``0``, amount ``300.001``, empty amount.
  Their ids (when numeric and positive) are ``rows + 1, rows + 2, ...`` so they never
  collide with valid ids.
* ``--duplicates K`` appends, after all other lines, K byte-identical copies of
  earlier valid lines (distinct ids drawn deterministically when ``K < rows``) and,
  when ``K >= 2``, **one extra** conflicting duplicate: the id and wording of another
  earlier row with a different amount (negated, or ``12.34`` when it was 0).  The file
  then has ``rows + malformed + duplicates + conflicting`` data lines.

Determinism
-----------
Row ``i`` depends only on ``(seed, i)``: rows are generated in fixed blocks of
:data:`BLOCK_ROWS` rows, block ``b`` seeded with ``SeedSequence(seed,
spawn_key=(0, b))``.  The file is therefore byte-identical for the same arguments
and independent of ``chunk_rows``; ``generate_frame(n, seed, start_id=k)`` returns
exactly rows ``k..k+n-1`` of ``generate_frame(m, seed)``.  Malformed positions and
duplicate picks use their own streams (spawn keys ``(1,)`` and ``(2,)``).
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "BLOCK_ROWS",
    "BOUNDARY_AMOUNTS",
    "HEADER",
    "MALFORMED_KINDS",
    "TAGS",
    "GenerationSummary",
    "generate_frame",
    "write_csv",
]

logger = logging.getLogger(__name__)

#: Rows per deterministic generation block (row content depends on seed and id only).
BLOCK_ROWS: int = 50_000
#: The four tags looked for in wordings.
TAGS: tuple[str, ...] = ("TATA", "TOTO", "TUTU", "TAXI")
#: Exact band boundaries (in cents) that are injected into the amounts.
BOUNDARY_AMOUNTS: tuple[int, ...] = (30000, 30001, 29999, 0, 1, -1, -20000, -20001, -19999)
#: CSV header line.
HEADER: bytes = b"id,amount,wording\n"

_Generator = np.random.Generator
_SlotFn = Callable[[_Generator, int], pa.Array]

# --------------------------------------------------------------------------- vocabularies
# None of these may contain TATA/TOTO/TUTU/TAXI as a whole word (checked at import).
_CREDITORS = [
    "EDF", "ENGIE", "Free Telecom Free HautDebit", "ORANGE SA", "SFR", "BOUYGUES TELECOM",
    "MUTUELLE", "MACSF-ASSU", "CE PROVENCE ALPES CORSE REU", "Google", "APY", "Doctolib",
    "Greenyellow Vente d'Energie", "URSSAF", "DGFIP IMPOT", "Direction Générale des Finances",
    "AXA France IARD", "MAIF", "MATMUT", "Allianz IARD", "Crédit Agricole Assurances",
    "NETFLIX.COM", "SPOTIFY", "CANAL+", "Veolia Eau", "SUEZ EAU FRANCE", "Total Énergies",
    "ALAN SA", "SwissLife Prévoyance", "Groupama", "Velib", "NAVIGO", "Société Générale",
    "COFIDIS", "Cetelem", "AMAZON PRIME", "Apple.com Bill", "BNP PARIBAS CARDIF",
    "EDF, Réf client", "Bouygues \"Box\"",
]
_MERCHANTS = [
    "AMAZON PAYMENTS", "CARREFOUR MARKET", "MONOPRIX", "LECLERC", "AUCHAN", "LIDL",
    "FNAC", "DARTY", "DECATHLON", "LEROY MERLIN", "IKEA", "SNCF", "RATP", "UBER",
    "UBER EATS", "DELIVEROO", "PAYPAL", "Boulangerie Pâtisserie", "Café de la Gare",
    "Crêperie du Port", "PHARMACIE CENTRALE", "Picard", "FRANPRIX", "SHELL", "ESSO",
    "TOTALENERGIES", "Hôtel du Nord", "BP TS GERMAIN", "MYPHONESTORE", "EXAPRINT.FR",
    "PASSAGE BLEU", "Maisons Du Monde", "H&M", "ZARA", "Sephora", "CULTURA",
    "Le Bon Marché", "Galeries Lafayette", "BRICO DEPOT", "INTERMARCHE", "Relay",
    "McDonald's", "BURGER KING", "La Poste", "L'Épicerie Fine", "Station Esso A7",
]
_PERSONS = [
    "M G P A - MUT GLE DE P", "Sas Fix At Home", "ADvalor", "DUPONT JEAN", "Mme MARTIN SOPHIE",
    "M. ou Mme LEFÈVRE", "BERNARD PIERRE", "Durand Élodie", "PETIT THOMAS", "ROUX CÉLINE",
    "SUMUP LIMITED SUMUP", "ING BANK PARIS BRO/7020", "AUTO BRILLANCE", "LEGRAND FRANÇOIS",
    "GARNIER HÉLÈNE", "SCI LES TILLEULS", "Cabinet Moreau", "FAURE ANTOINE", "MERCIER LÉA",
    "CPAM PARIS", "CAF DE L'ISERE", "POLE EMPLOI", "France Travail", "LYDIA SOLUTIONS",
    "Mr et Mme Girard", "BLANC NICOLAS", "QONTO SAS", "Chevalier Inès", "NOËL MARC",
]
_BUSINESSES = [
    "SAS DUPRE", "CAPGEMINI", "ACCENTURE", "Mairie de Lyon", "HOPITAL NORD", "SNCF VOYAGEURS",
    "Décathlon SA", "ATOS", "Société Générale", "THALES", "La Poste", "MICHELIN",
]
_OFFERS = [
    "CARTE VISA PREMIER", "OFFRE ESSENTIEL", "CB GOLD MASTERCARD", "PACK FAMILLE",
    "Formule Sérénité", "OPTION INTERNATIONALE", "COMPTE PRO", "ASSURANCE MOYENS PAIEMENT",
]
_CITIES = [
    "PARIS", "LYON", "MARSEILLE", "TOULOUSE", "NICE", "NANTES", "STRASBOURG", "MONTPELLIER",
    "BORDEAUX", "LILLE", "RENNES", "REIMS", "LE HAVRE", "SAINT-ÉTIENNE", "TOULON", "GRENOBLE",
    "DIJON", "ANGERS", "NÎMES", "VILLEURBANNE", "ORLÉANS", "BESANÇON", "Évry", "Clermont-Fd",
    "LE RHEU", "ST GERMAIN LE", "PARIS 15", "BOULOGNE BILL", "AIX EN PROVENCE", "Brest",
    "Limoges", "Tours", "Amiens", "Perpignan", "METZ", "CAEN", "Nancy", "ROUEN", "Annecy",
]
_BANKS = [
    "Société Générale", "BNP PARIBAS", "CRÉDIT AGRICOLE", "LCL", "Caisse d'Épargne",
    "BANQUE POPULAIRE", "CIC", "Crédit Mutuel", "LA BANQUE POSTALE", "HSBC", "BOURSORAMA",
]
_GLUED = ["AMAZON PAYME", "APPLE.COM/BI", "SNCF INTERNE", "GOOGLE *YOUT", "RYANAIR", "NETFLIX.C"]
_FEES = [
    "COMPTE PRO", "BOURSORAMA PROTEC. MONO", "TENUE DE COMPTE", "ENVOI CHEQUIER",
    "Lettre d'information", "OPPOSITION CARTE", "PAIEMENT HORS ZONE EURO", "RETRAIT DAB ETRANGER",
]
_MOTIFS = [
    "LOYER", "REMBOURSEMENT", "Cadeau anniversaire", "PARTAGE FACTURE", "Vacances été",
    "PRET", "Participation repas", "FRAIS DE SCOLARITÉ", "Cotisation club",
]
_SUFFIXES = [
    "SAS", "SARL", "FRANCE", "FACTURE", "PARIS", "Services", "FR", "EUROPE", "Réf 2024",
    "Paiement", "SA", "ASSOCIATION", "Boutique", "LYON", "Échéance",
]
_PREFIXES = ["STE", "Société", "SARL", "M.", "Mme", "ETS", "Cie", "Sté"]
_EMBEDDED = [
    "TOTOCORP", "TOTOS", "TATAOUINE", "TATAMI", "TUTUS", "TUTUTE", "TAXIS", "TAXIPHONE",
    "MINITAXI", "Taxis", "totochrome", "AUTOTAXI", "TATAS", "Tutuserie",
]

# --------------------------------------------------------------------------- templates
# (weight, pattern).  ``{creditor}``, ``{merchant}``, ``{person}``, ``{biz}`` and
# ``{offer}`` are *party* slots: at most one per template, always space-delimited, and
# replaced by the tag phrase for tagged rows.  Other slots are filled from _SLOTS.
_TEMPLATES: list[tuple[float, str]] = [
    (6.0, "PRLV SEPA {creditor}"),
    (2.0, "PRLV SEPA {creditor} Réf {n6}"),
    (1.5, "Prlv {creditor}"),
    (2.0, "PRELEVEMENT EUROPEEN {creditor}"),
    (1.5, "Prélèvement SEPA {creditor} échéance {mmyy}"),
    (1.0, "PRELEVEMENT FACTURE {mm_yyyy} N°{n13}"),
    (0.8, "PRLV SEPA {creditor} Réf: \"{ref8}\", échéance {mmyy}"),
    (1.0, "PRLV SEPA GC re {creditor} "),
    (0.8, "PRELEVEMENT {creditor}"),
    (6.0, "CARTE {date} {merchant} {city}"),
    (2.0, "CARTE {date} {n2} {merchant}"),
    (4.0, "CB {merchant} {date}"),
    (1.0, "CB{n2}{glued} {date}"),
    (1.0, "CB PAYPAL {date}"),
    (2.0, "PAIEMENT PAR CARTE {merchant} {city} {ddmm}"),
    (1.5, "PAIEMENT CB {ddmm} {city} {merchant}"),
    (1.0, "ACHAT CB {merchant} {dmy_dot} CARTE"),
    (1.0, "{merchant} {city} LE {dmy_sp}"),
    (1.0, "{merchant} {city}"),
    (0.8, "TH {merchant} {city} FR"),
    (0.8, "BP {merchant} {city} FR"),
    (0.6, "AVOIR {merchant} {date}"),
    (0.6, "PAYPAL * {merchant} {n10}"),
    (0.6, "UBER   * PENDING MCC {n4}"),
    (4.0, "VIR SEPA {person}"),
    (1.5, "VIR {person} FACTURE"),
    (2.0, "VIREMENT EMIS WEB {person}"),
    (1.0, "VIREMENT EMIS WEB"),
    (1.0, "VIREMENT EN VOTRE FAVEUR {person}"),
    (1.0, "VIR SEPA RECU /DE {person} /MOTIF {motif}"),
    (1.0, "VIR INST {person} Réf {ref8}"),
    (0.8, "Virement de {person} - loyer, charges {mm_yyyy}"),
    (1.0, "VIR SALAIRE {biz}"),
    (0.5, "VIR SALAIRE"),
    (1.5, "CHEQUE {cheque}"),
    (0.5, "REMISE CHEQUE N°{cheque}"),
    (1.5, "RETRAIT DAB {date} {city}"),
    (0.8, "RETRAIT DAB {bank} {date} {city}"),
    (1.0, "*COTISATION {offer}"),
    (1.0, "*FRAIS {fee}"),
    (0.6, "FRAIS TENUE DE COMPTE {mmyy}"),
    (0.5, "COMMISSION D'INTERVENTION {date}"),
    (0.8, "{creditor} cloture du compte"),
    (0.8, "{merchant} remb. internet {mmyy}"),
    (0.8, "Remboursement {merchant} fact {ref8}"),
    (0.6, "abonnement {creditor} annuel"),
    (0.5, "Intérêts créditeurs {yyyy}"),
    (0.5, "ECHEANCE PRET N°{n8}"),
    (0.5, "Dépôt espèces {bank} {city}"),
    (0.5, "VERSEMENT \"{bank}\", agence {city}"),
]

_PARTY_KINDS: dict[str, list[str]] = {
    "creditor": _CREDITORS,
    "merchant": _MERCHANTS,
    "person": _PERSONS,
    "biz": _BUSINESSES,
    "offer": _OFFERS,
}

# Tag forms drawn per row (code, probability).  Codes >= _FIRST_TAGGED need a party slot.
_NONE, _ONE, _ONE_SUFFIX, _ONE_PREFIX, _ONE_PARTY, _ONE_REPEAT, _ONE_EMBEDDED = range(7)
_TWO, _TWO_SUFFIX, _EMB, _EMB_SUFFIX = range(7, 11)
_FORM_PROBS: dict[int, float] = {
    _NONE: 0.50,
    _ONE: 0.22, _ONE_SUFFIX: 0.07, _ONE_PREFIX: 0.05, _ONE_PARTY: 0.03,
    _ONE_REPEAT: 0.015, _ONE_EMBEDDED: 0.015,
    _TWO: 0.025, _TWO_SUFFIX: 0.015,
    _EMB: 0.04, _EMB_SUFFIX: 0.02,
}
_FIRST_TAGGED = _ONE
_ONE_FORMS = (_ONE, _ONE_SUFFIX, _ONE_PREFIX, _ONE_PARTY, _ONE_REPEAT, _ONE_EMBEDDED)
_TWO_FORMS = (_TWO, _TWO_SUFFIX)

# --------------------------------------------------------------------------- helpers


def _vocab(values: Sequence[str]) -> pa.Array:
    """Return ``values`` as a pyarrow string array (vocabulary for ``take``)."""
    return pa.array(list(values), type=pa.string())


def _pick(vocab: pa.Array, rng: _Generator, n: int) -> pa.Array:
    """Draw ``n`` uniform entries of ``vocab``."""
    return vocab.take(rng.integers(0, len(vocab), n))


def _digits(width: int) -> pa.Array:
    """Vocabulary of all zero-padded numbers with ``width`` digits."""
    return _vocab([f"{i:0{width}d}" for i in range(10**width)])


def _int_strings(rng: _Generator, n: int, low: int, high: int) -> pa.Array:
    """``n`` random integers in ``[low, high)`` as strings (no padding needed: low >= 10**k)."""
    return pa.array(rng.integers(low, high, n)).cast(pa.string())


def _letters(rng: _Generator, n: int, width: int = 8) -> pa.Array:
    """``n`` random strings of ``width`` upper-case ASCII letters."""
    raw = rng.integers(65, 91, (n, width), dtype=np.uint8)
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(raw.tobytes())]
    )
    return fixed.cast(pa.string())


def _date_vocabs() -> dict[str, pa.Array]:
    """Every day/month from 2021-01-01 to 2024-12-31 in the date formats banks print."""
    days = np.arange(np.datetime64("2021-01-01"), np.datetime64("2025-01-01"))
    months = np.arange(np.datetime64("2021-01"), np.datetime64("2025-01"))
    day_dt = days.astype(object)
    month_dt = months.astype(object)
    return {
        "date": _vocab([d.strftime("%d/%m/%y") for d in day_dt]),
        "ddmm": _vocab([d.strftime("%d/%m") for d in day_dt]),
        "dmy_dot": _vocab([d.strftime("%d.%m.%y") for d in day_dt]),
        "dmy_sp": _vocab([d.strftime("%d %m %y") for d in day_dt]),
        "mmyy": _vocab([m.strftime("%m/%y") for m in month_dt]),
        "mm_yyyy": _vocab([m.strftime("%m/%Y") for m in month_dt]),
        "yyyy": _vocab(["2021", "2022", "2023", "2024"]),
    }


def _vocab_slot(vocab: pa.Array) -> _SlotFn:
    """Slot filler drawing uniformly from ``vocab``."""
    return lambda rng, n: _pick(vocab, rng, n)


def _int_slot(low: int, high: int) -> _SlotFn:
    """Slot filler drawing integers in ``[low, high)``."""
    return lambda rng, n: _int_strings(rng, n, low, high)


_SLOTS: dict[str, _SlotFn] = {
    **{name: _vocab_slot(v) for name, v in _date_vocabs().items()},
    "city": _vocab_slot(_vocab(_CITIES)),
    "bank": _vocab_slot(_vocab(_BANKS)),
    "glued": _vocab_slot(_vocab(_GLUED)),
    "fee": _vocab_slot(_vocab(_FEES)),
    "motif": _vocab_slot(_vocab(_MOTIFS)),
    "n2": _vocab_slot(_digits(2)),
    "n4": _vocab_slot(_digits(4)),
    "n6": _int_slot(100_000, 1_000_000),
    "n8": _int_slot(10_000_000, 100_000_000),
    "n10": _int_slot(1_000_000_000, 10_000_000_000),
    "n13": _int_slot(10**12, 10**13),
    "cheque": _int_slot(1_000_000, 10_000_000),
    "ref8": lambda rng, n: _letters(rng, n, 8),
}
_PARTY_VOCABS: dict[str, pa.Array] = {k: _vocab(v) for k, v in _PARTY_KINDS.items()}
_TAG_FORMS = _vocab([f for t in TAGS for f in (t, t.title(), t.lower())])
_TAG_CASE_PROBS = np.array([0.75, 0.12, 0.13])
_SUFFIX_V = _vocab(_SUFFIXES)
_PREFIX_V = _vocab(_PREFIXES)
_EMBEDDED_V = _vocab(_EMBEDDED)
_BIZ_V = _PARTY_VOCABS["biz"]

_SLOT_RE = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class _Template:
    """A parsed wording template: literal strings and slot names, in order."""

    parts: tuple[tuple[bool, str], ...]  # (is_slot, literal-or-slot-name)
    party: str | None  # party slot kind, if any


def _parse(pattern: str) -> _Template:
    """Split ``pattern`` into literals and ``{slot}`` references and validate them."""
    parts: list[tuple[bool, str]] = []
    party: str | None = None
    pos = 0
    for m in _SLOT_RE.finditer(pattern):
        if m.start() > pos:
            parts.append((False, pattern[pos:m.start()]))
        name = m.group(1)
        if name in _PARTY_KINDS:
            if party is not None:
                raise ValueError(f"template {pattern!r} has two party slots")
            before, after = pattern[: m.start()], pattern[m.end():]
            if (before and not before.endswith(" ")) or (after and not after.startswith(" ")):
                raise ValueError(f"party slot must be space-delimited in {pattern!r}")
            party = name
        elif name not in _SLOTS:
            raise ValueError(f"unknown slot {name!r} in {pattern!r}")
        parts.append((True, name))
        pos = m.end()
    if pos < len(pattern):
        parts.append((False, pattern[pos:]))
    return _Template(tuple(parts), party)


_PARSED: list[_Template] = [_parse(p) for _, p in _TEMPLATES]
_WEIGHTS = np.array([w for w, _ in _TEMPLATES], dtype=float)
_ALL_P = _WEIGHTS / _WEIGHTS.sum()
_PARTY_IDS = np.array([i for i, t in enumerate(_PARSED) if t.party is not None])
_PARTY_P = _WEIGHTS[_PARTY_IDS] / _WEIGHTS[_PARTY_IDS].sum()
_FORM_CODES = np.array(list(_FORM_PROBS))
_FORM_P = np.array(list(_FORM_PROBS.values()))
_FORM_P = _FORM_P / _FORM_P.sum()

_TAG_WORD_RE = re.compile(r"(?<!\w)(?:TATA|TOTO|TUTU|TAXI)(?!\w)", re.IGNORECASE)


def _check_vocabularies() -> None:
    """Fail fast if a fixed vocabulary or template literal contains a whole-word tag."""
    texts = [p for _, p in _TEMPLATES] + _SUFFIXES + _PREFIXES + _EMBEDDED + _CITIES
    texts += _BANKS + _GLUED + _FEES + _MOTIFS
    for values in _PARTY_KINDS.values():
        texts += values
    bad = [t for t in texts if _TAG_WORD_RE.search(t)]
    if bad:
        raise ValueError(f"vocabulary entries contain a tag word: {bad}")


_check_vocabularies()

# Amount formatting: fractional-part vocabularies indexed by cents % 100.
_FRAC_SHORT = _vocab(["" if f == 0 else f".{f // 10}" if f % 10 == 0 else f".{f:02d}" for f in range(100)])
_FRAC_FIXED = _vocab([f".{f:02d}" for f in range(100)])
_SIGN = _vocab(["", "-"])


def _scatter(n: int, pieces: list[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """Assemble an array of length ``n`` from (positions, values) pieces covering 0..n-1."""
    if not pieces:
        return pa.array([], type=pa.string())
    positions = np.concatenate([idx for idx, _ in pieces])
    values = pa.concat_arrays([v for _, v in pieces])
    inverse = np.empty(n, dtype=np.int64)
    inverse[positions] = np.arange(n, dtype=np.int64)
    return values.take(inverse)


def _join(parts: Sequence[pa.Array | str]) -> pa.Array | str:
    """Concatenate string arrays/literals element-wise (no separator)."""
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "")


def _tag_words(rng: _Generator, n: int) -> tuple[np.ndarray, pa.Array]:
    """Draw ``n`` tags (index into TAGS) and their printed case form."""
    tags = rng.integers(0, len(TAGS), n)
    case = rng.choice(3, size=n, p=_TAG_CASE_PROBS)
    return tags, _TAG_FORMS.take(tags * 3 + case)


def _tag_phrases(rng: _Generator, forms: np.ndarray) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Build the party text for tagged rows.

    Returns the phrases, the expected distinct tag count (0, 1 or 2) and the expected
    single tag index (-1 unless exactly one distinct tag).
    """
    n = len(forms)
    count = np.zeros(n, dtype=np.int8)
    single = np.full(n, -1, dtype=np.int8)
    pieces: list[tuple[np.ndarray, pa.Array]] = []
    for form in np.unique(forms):
        idx = np.flatnonzero(forms == form)
        m = len(idx)
        tags, word = _tag_words(rng, m)
        if form in _ONE_FORMS:
            count[idx] = 1
            single[idx] = tags
        elif form in _TWO_FORMS:
            count[idx] = 2
        if form == _ONE:
            text = word
        elif form == _ONE_SUFFIX:
            text = _join([word, " ", _pick(_SUFFIX_V, rng, m)])
        elif form == _ONE_PREFIX:
            text = _join([_pick(_PREFIX_V, rng, m), " ", word])
        elif form == _ONE_PARTY:
            text = _join([word, " ", _pick(_BIZ_V, rng, m)])
        elif form == _ONE_REPEAT:
            same = _TAG_FORMS.take(tags * 3 + rng.integers(0, 3, m))  # same tag, any case
            text = _join([word, " ", _pick(_SUFFIX_V, rng, m), " ", same])
        elif form == _ONE_EMBEDDED:
            text = _join([_pick(_EMBEDDED_V, rng, m), " ", word])
        elif form in _TWO_FORMS:
            other = (tags + rng.integers(1, len(TAGS), m)) % len(TAGS)
            word2 = _TAG_FORMS.take(other * 3 + rng.choice(3, size=m, p=_TAG_CASE_PROBS))
            if form == _TWO:
                text = _join([word, " ", word2])
            else:
                text = _join([word, " ", _pick(_SUFFIX_V, rng, m), " ", word2])
        elif form == _EMB:
            text = _pick(_EMBEDDED_V, rng, m)
        elif form == _EMB_SUFFIX:
            text = _join([_pick(_EMBEDDED_V, rng, m), " ", _pick(_SUFFIX_V, rng, m)])
        else:  # pragma: no cover - guarded by _FORM_PROBS
            raise AssertionError(form)
        pieces.append((idx, text))
    return _scatter(n, pieces), count, single


def _amount_cents(rng: _Generator, n: int) -> np.ndarray:
    """Draw ``n`` amounts in integer cents (see module docstring for the mix)."""
    kind = rng.choice(5, size=n, p=[0.78, 0.08, 0.05, 0.04, 0.05])
    cents = rng.integers(-50_000, 50_001, n)  # uniform -500.00..+500.00
    large = np.round(np.exp(rng.uniform(np.log(50_001), np.log(2_000_000), n))).astype(np.int64)
    large = np.where(rng.random(n) < 0.6, -large, large)
    small = rng.integers(-500, 501, n)
    rounded = rng.integers(-50, 51, n) * 1_000
    cents = np.where(kind == 1, large, cents)
    cents = np.where(kind == 2, small, cents)
    cents = np.where(kind == 3, rounded, cents)
    boundary = np.flatnonzero(kind == 4)
    values = np.array(BOUNDARY_AMOUNTS, dtype=np.int64)
    rotation = int(rng.integers(0, len(values)))
    cents[boundary] = values[(np.arange(len(boundary)) + rotation) % len(values)]
    return cents


def _format_amounts(rng: _Generator, cents: np.ndarray) -> pa.Array:
    """Format cents as ``-283.66`` / ``300`` / ``-327.7`` (75 %) or ``300.00`` (25 %)."""
    n = len(cents)
    absolute = np.abs(cents)
    frac = absolute % 100
    fixed = rng.random(n) < 0.25
    frac_short = _FRAC_SHORT.take(frac)
    frac_fixed = _FRAC_FIXED.take(frac)
    frac_text = pc.if_else(pa.array(fixed), frac_fixed, frac_short)
    whole = pa.array(absolute // 100).cast(pa.string())
    return pc.binary_join_element_wise(_SIGN.take((cents < 0).astype(np.int8)), whole, frac_text, "")


def _generate_block(seed: int, block: int) -> pa.Table:
    """Generate the full block ``block`` (ids ``block*BLOCK_ROWS+1`` ...) for ``seed``.

    Columns: id (int64), amount (string), wording (string), cents (int64),
    tag_count (int8), tag (int8, -1 if not exactly one distinct tag).
    """
    n = BLOCK_ROWS
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, block)))
    ids = np.arange(block * n + 1, (block + 1) * n + 1, dtype=np.int64)

    forms = rng.choice(_FORM_CODES, size=n, p=_FORM_P)
    tagged = np.flatnonzero(forms >= _FIRST_TAGGED)
    phrases, count_t, single_t = _tag_phrases(rng, forms[tagged])
    tag_count = np.zeros(n, dtype=np.int8)
    tag_single = np.full(n, -1, dtype=np.int8)
    tag_count[tagged] = count_t
    tag_single[tagged] = single_t
    phrase_pos = np.full(n, -1, dtype=np.int64)
    phrase_pos[tagged] = np.arange(len(tagged))

    template = np.where(
        forms >= _FIRST_TAGGED,
        rng.choice(_PARTY_IDS, size=n, p=_PARTY_P),
        rng.choice(len(_PARSED), size=n, p=_ALL_P),
    )
    order = np.argsort(template, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(template, minlength=len(_PARSED)))])
    pieces: list[tuple[np.ndarray, pa.Array]] = []
    for t_id, tmpl in enumerate(_PARSED):
        idx = order[bounds[t_id]:bounds[t_id + 1]]
        m = len(idx)
        if m == 0:
            continue
        parts: list[pa.Array | str] = []
        for is_slot, name in tmpl.parts:
            if not is_slot:
                parts.append(name)
            elif name in _PARTY_KINDS:
                pos = phrase_pos[idx]
                is_tagged = pos >= 0
                plain = np.flatnonzero(~is_tagged)
                with_tag = np.flatnonzero(is_tagged)
                sub = [(plain, _pick(_PARTY_VOCABS[name], rng, len(plain)))]
                if len(with_tag):
                    sub.append((with_tag, phrases.take(pos[with_tag])))
                parts.append(_scatter(m, sub))
            else:
                parts.append(_SLOTS[name](rng, m))
        text = _join(parts)
        if isinstance(text, str):
            text = pa.array([text] * m, type=pa.string())
        pieces.append((idx, text))
    wording = _scatter(n, pieces)

    # Case variants: ~4 % lower-cased, ~2 % title-cased (tags keep matching case-insensitively).
    variant = rng.random(n)
    for mask, fn in ((variant < 0.04, pc.utf8_lower), ((variant >= 0.04) & (variant < 0.06), pc.utf8_title)):
        sel = np.flatnonzero(mask)
        wording = pc.replace_with_mask(wording, pa.array(mask), fn(wording.take(sel)))

    cents = _amount_cents(rng, n)
    amount = _format_amounts(rng, cents)
    return pa.table(
        {
            "id": pa.array(ids),
            "amount": amount,
            "wording": wording,
            "cents": pa.array(cents),
            "tag_count": pa.array(tag_count),
            "tag": pa.array(tag_single),
        }
    )


def _check_args(rows: int, seed: int, start_id: int = 1) -> None:
    """Validate the common generation arguments."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if start_id < 1:
        raise ValueError(f"start_id must be >= 1, got {start_id}")


def _generate_table(
    rows: int, seed: int, start_id: int = 1, cache: dict[int, pa.Table] | None = None
) -> pa.Table:
    """Rows with ids ``start_id .. start_id + rows - 1`` (all internal columns).

    ``cache`` (optional, owned by the caller) keeps the last block generated so that
    successive chunks whose boundary falls inside a block do not generate it twice.
    """
    _check_args(rows, seed, start_id)
    if rows == 0:
        return _generate_block(seed, 0).slice(0, 0)
    first, last = start_id - 1, start_id - 1 + rows  # 0-based half-open range
    tables = []
    for block in range(first // BLOCK_ROWS, (last - 1) // BLOCK_ROWS + 1):
        lo = max(first, block * BLOCK_ROWS) - block * BLOCK_ROWS
        hi = min(last, (block + 1) * BLOCK_ROWS) - block * BLOCK_ROWS
        if cache is not None and block in cache:
            table = cache[block]
        else:
            table = _generate_block(seed, block)
        if cache is not None:
            cache.clear()
            if hi < BLOCK_ROWS:  # the next chunk starts inside this block
                cache[block] = table
        tables.append(table.slice(lo, hi - lo))
    return pa.concat_tables(tables)


def generate_frame(rows: int, seed: int, start_id: int = 1, *, truth: bool = False) -> pd.DataFrame:
    """Generate one chunk of transactions as a DataFrame.

    Args:
        rows: number of rows.
        seed: non-negative seed; with ``start_id`` it fully determines the content.
        start_id: id of the first row; ids are ``start_id .. start_id + rows - 1``.
        truth: also return the ground truth of the tagging: ``tag_count`` (number of
            distinct tags present as whole words: 0, 1 or 2) and ``tag`` (the tag when
            exactly one distinct tag is present, else missing).

    Returns:
        Columns ``id`` (int64), ``amount`` (str, the text written to the file) and
        ``wording`` (str, unquoted), plus ``tag_count``/``tag`` when ``truth``.
    """
    table = _generate_table(rows, seed, start_id)
    frame = pd.DataFrame(
        {
            "id": table["id"].to_numpy(),
            "amount": table["amount"].to_numpy(),
            "wording": table["wording"].to_numpy(),
        }
    ).astype({"amount": "str", "wording": "str"})
    if truth:
        tag_idx = table["tag"].to_numpy()
        frame["tag_count"] = table["tag_count"].to_numpy()
        names = np.array(TAGS + ("",), dtype=object)[np.where(tag_idx < 0, len(TAGS), tag_idx)]
        frame["tag"] = pd.array(names, dtype="str").astype("str")
        frame.loc[tag_idx < 0, "tag"] = None
    return frame


# --------------------------------------------------------------------------- CSV writing

_NEEDS_QUOTES = r'[,"\r\n]'


def _csv_lines(table: pa.Table | pa.RecordBatch) -> tuple[memoryview, np.ndarray]:
    """Render rows as CSV lines; returns the bytes and the ``len + 1`` line offsets."""
    wording = table.column("wording")
    if isinstance(wording, pa.ChunkedArray):
        wording = wording.combine_chunks()
    needs = pc.match_substring_regex(wording, _NEEDS_QUOTES)
    mask = needs.to_numpy(zero_copy_only=False)
    if mask.any():
        sel = np.flatnonzero(mask)
        quoted = pc.binary_join_element_wise(
            '"', pc.replace_substring(wording.take(sel), '"', '""'), '"', ""
        )
        wording = pc.replace_with_mask(wording, needs, quoted)
    ids = pc.cast(table.column("id"), pa.string())
    line = pc.binary_join_element_wise(ids, ",", table.column("amount"), ",", wording, "\n", "")
    if isinstance(line, pa.ChunkedArray):
        line = line.combine_chunks()
    line = line.cast(pa.large_string()) if line.type != pa.large_string() else line
    _, offsets_buf, data_buf = line.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[line.offset: line.offset + len(line) + 1]
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    return data, offsets


def _format_cents(cents: int) -> str:
    """Short amount form for one value (used for the conflicting duplicate)."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    text = f"{sign}{whole}"
    if frac:
        text += f".{frac:02d}".rstrip("0")
    return text


def _quote(wording: str) -> str:
    """Quote one CSV field if needed (same rule as the vectorized writer)."""
    if re.search(_NEEDS_QUOTES, wording):
        return '"' + wording.replace('"', '""') + '"'
    return wording


#: Number of distinct malformed line kinds (they cycle in this order, see module docstring).
MALFORMED_KINDS: int = 10
_MALFORMED_WORDINGS = (
    "PRLV SEPA LIGNE CORROMPUE", "CARTE 01/02/22 RELAY PARIS", "VIR SEPA EXPORT INCOMPLET",
)


def _malformed_line(kind: int, bad_id: int) -> bytes:
    """One malformed line of the given kind (see module docstring for the cycle)."""
    w = _MALFORMED_WORDINGS[kind % len(_MALFORMED_WORDINGS)]
    lines = (  # MALFORMED_KINDS entries, in cycle order
        f'{bad_id},"12,50",{w}',   # decimal comma
        f"-4,12.50,{w}",           # negative id
        f"{bad_id},12.50",         # 2 fields
        f"{bad_id},abc,{w}",       # not a number
        f"x1,12.50,{w}",           # non-integer id
        f"{bad_id},12.50,{w},EXTRA",  # 4 fields
        f"{bad_id},1e3,{w}",       # exponent notation
        f"0,12.50,{w}",            # id 0
        f"{bad_id},300.001,{w}",   # three decimals
        f"{bad_id},,{w}",          # empty amount
    )
    return (lines[kind % len(lines)] + "\n").encode("utf-8")


@dataclass(frozen=True)
class GenerationSummary:
    """What :func:`write_csv` wrote.

    Attributes:
        rows: valid rows (ids 1..rows).
        malformed: malformed lines inserted.
        duplicates: byte-identical copies of earlier lines appended.
        path: output file.
        bytes: file size in bytes.
        conflicting: conflicting duplicates appended (1 when ``duplicates >= 2``, else 0).
    """

    rows: int
    malformed: int
    duplicates: int
    path: Path
    bytes: int
    conflicting: int = 0

    @property
    def lines(self) -> int:
        """Data lines in the file (header excluded)."""
        return self.rows + self.malformed + self.duplicates + self.conflicting


def _plan_malformed(rows: int, seed: int, count: int) -> np.ndarray:
    """Sorted insertion points in ``0..rows`` (line goes before valid row at that index)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    return np.sort(rng.integers(0, rows + 1, count))


def _plan_duplicates(rows: int, seed: int, count: int) -> tuple[np.ndarray, int | None]:
    """Ids to copy exactly (in append order) and the id of the conflicting duplicate."""
    if count == 0:
        return np.empty(0, dtype=np.int64), None
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    wanted = count + (1 if count >= 2 else 0)
    picks = rng.choice(rows, size=wanted, replace=wanted > rows) + 1
    if count >= 2:
        return picks[:count], int(picks[count])
    return picks, None


def _write_range(out: BinaryIO, data: memoryview, offsets: np.ndarray, lo: int, hi: int) -> None:
    """Write lines ``lo..hi-1`` of a rendered chunk."""
    if hi > lo:
        out.write(data[offsets[lo]:offsets[hi]])


def write_csv(
    path: str | os.PathLike[str],
    rows: int,
    seed: int,
    malformed: int = 0,
    duplicates: int = 0,
    chunk_rows: int = 500_000,
) -> GenerationSummary:
    """Stream ``rows`` transactions (plus optional bad lines) to a CSV file.

    The file is written to a temporary sibling and renamed, so readers never see a
    half-written file.  At most one chunk of ``chunk_rows`` rows is held in memory; the
    content does not depend on ``chunk_rows``.

    Args:
        path: output CSV path (parent directories are created).
        rows: number of valid rows (ids ``1..rows``).
        seed: non-negative seed.
        malformed: malformed lines inserted at deterministic positions.
        duplicates: exact copies of earlier rows appended at the end; when ``>= 2`` one
            conflicting duplicate (same id and wording, different amount) follows them.
        chunk_rows: rows generated and written per chunk.

    Returns:
        A :class:`GenerationSummary`.
    """
    _check_args(rows, seed)
    if malformed < 0 or duplicates < 0:
        raise ValueError("malformed and duplicates must be >= 0")
    if duplicates and rows == 0:
        raise ValueError("duplicates need at least one valid row")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")

    positions = _plan_malformed(rows, seed, malformed)
    dup_ids, conflict_id = _plan_duplicates(rows, seed, duplicates)
    wanted_ids = set(dup_ids.tolist()) | ({conflict_id} if conflict_id is not None else set())
    captured: dict[int, bytes] = {}
    block_cache: dict[int, pa.Table] = {}
    conflict_line = b""
    next_bad = 0  # index of the next malformed line to write

    def write_malformed_until(out: BinaryIO, row_index: int) -> None:
        """Write the pending malformed lines planned before valid row ``row_index``."""
        nonlocal next_bad
        while next_bad < malformed and positions[next_bad] <= row_index:
            out.write(_malformed_line(next_bad, rows + 1 + next_bad))
            next_bad += 1

    with open(tmp, "wb") as out:
        out.write(HEADER)
        for start in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - start)
            table = _generate_table(n, seed, start_id=start + 1, cache=block_cache)
            data, offsets = _csv_lines(table)
            cut = start  # global index of the next row to write
            for pos in positions[(positions >= start) & (positions < start + n)]:
                _write_range(out, data, offsets, cut - start, int(pos) - start)
                cut = int(pos)
                write_malformed_until(out, cut)
            _write_range(out, data, offsets, cut - start, n)
            for row_id in sorted(i for i in wanted_ids if start < i <= start + n):
                k = row_id - 1 - start
                captured[row_id] = bytes(data[offsets[k]:offsets[k + 1]])
                if row_id == conflict_id:
                    cents = int(table["cents"][k].as_py())
                    other = -cents if cents else 1234
                    wording = table["wording"][k].as_py()
                    conflict_line = f"{row_id},{_format_cents(other)},{_quote(wording)}\n".encode()
            logger.debug("wrote rows %d..%d", start + 1, start + n)
            del table, data, offsets
        write_malformed_until(out, rows)
        for row_id in dup_ids.tolist():
            out.write(captured[row_id])
        out.write(conflict_line)
    os.replace(tmp, target)
    summary = GenerationSummary(
        rows=rows,
        malformed=malformed,
        duplicates=duplicates,
        path=target,
        bytes=target.stat().st_size,
        conflicting=1 if conflict_id is not None else 0,
    )
    return summary
