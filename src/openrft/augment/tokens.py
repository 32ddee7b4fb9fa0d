"""What a rewrite of a question must keep: its numbers (digits or number words), units, chemical formulas and
element symbols, LaTeX spans, and identifiers such as SMILES, IUPAC names and sequences.

:func:`protected_tokens` lists them for a question; :func:`missing_tokens` says which of them a variant dropped
(under light normalisation: spacing, LaTeX wrappers, ``x``/``\\times``); :func:`numbers_in` reads the numbers
of a text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from openrft.data.records import canonical_number

__all__ = ["Token", "missing_tokens", "numbers_in", "protected_tokens"]

_ELEMENTS = frozenset(
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Y "
    "Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re "
    "Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr".split())
_ELEMENT_WORDS = frozenset({"As", "At", "Be", "He", "In", "No", "Am", "Es", "Ho", "Po", "Pa", "Re", "Hf", "Md"})
_UNIT_ATOMS = frozenset(
    "m cm mm km nm um μm µm pm Å A mA kA g kg mg μg ug s ms us μs ns min h hr hrs K C °C °F F J kJ MJ eV keV MeV "
    "GeV V mV kV W kW MW N kN Pa kPa MPa GPa hPa atm bar mbar Torr mmHg mol mmol M mM μM uM L mL ml l Hz kHz MHz GHz "
    "T G Ω ohm ohms S lm lx cd Bq Gy Sv rad sr dB cal kcal D Da kDa % ppm ppb wt deg".split())
_NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                 "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
                 "thirteen": "13", "fourteen": "14", "fifteen": "15", "twenty": "20", "thirty": "30",
                 "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1000000"}
_LATEX_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_NUM_RE = re.compile(r"(?<![\w.])(?:(?<=[\s(=:,\[{^/*<>~])-|^-)?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\d])")
_UNIT_AFTER_RE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?([A-Za-zµμΩÅ°%][A-Za-z0-9µμΩÅ°%/^·.\-]*)")
_STRIP = "'\"“”‘’`«».,;:?!"


@dataclass(frozen=True)
class Token:
    """A piece of the original that a faithful rewrite keeps: ``kind`` and the text to look for."""

    kind: str  # identifier | sequence | formula | latex | number | unit
    text: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.text}"


def _latex_norm(s: str) -> str:
    s = s.replace("−", "-")
    s = re.sub(r"\\(?:mathrm|text|textrm|rm|mathit|mathbf|operatorname|left|right|displaystyle)\b", "", s)
    s = re.sub(r"\\times|×|\\cdot|·", "*", s)
    s = re.sub(r"\\[,;:! ]|~|\$|[{}\s]", "", s)
    return s


def _nospace(s: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", s).replace("−", "-"))


def _word_token(raw: str) -> str:
    t = raw.strip(_STRIP)
    while t.startswith("(") and t.count("(") > t.count(")"):
        t = t[1:]
    while t.endswith(")") and t.count(")") > t.count("("):
        t = t[:-1]
    if t.startswith("(") and t.endswith(")") and t.count("(") == 1 and t.count(")") == 1:
        t = t[1:-1]
    return t.strip(_STRIP)


def _formula(t: str) -> bool:
    parts = re.findall(r"[A-Z][a-z]?\d*(?:\.\d+)?", t)
    if not parts or "".join(parts) != t or any(re.match(r"[A-Z][a-z]?", p)[0] not in _ELEMENTS for p in parts):
        return False
    if any(ch.isdigit() for ch in t):
        return True
    if len(parts) == 1:
        return len(t) == 2 and t not in _ELEMENT_WORDS  # Fe, Al, Ge (not "In", "He", "As")
    return any(ch.islower() for ch in t)  # NaCl (not "CO", "DNA" handled by element check)


def protected_tokens(text: str) -> list[Token]:
    """Numbers, units, formulas, LaTeX spans, SMILES/IUPAC-like identifiers and sequences of ``text``.

    >>> [str(t) for t in protected_tokens("Is 1.70m of H2O in 'CC(=O)O' over $10^{4} \\mathrm{~V}$?")]
    ['latex:10^4V', 'formula:H2O', 'identifier:CC(=O)O', 'number:1.7', 'unit:m']
    """
    text = unicodedata.normalize("NFKC", text).replace("−", "-")
    out: list[Token] = []
    seen: set[tuple[str, str]] = set()

    def add(kind: str, value: str) -> None:
        if value and (kind, value) not in seen:
            seen.add((kind, value))
            out.append(Token(kind, value))

    for m in _LATEX_RE.finditer(text):
        add("latex", _latex_norm(next(g for g in m.groups() if g is not None)))
    rest = _LATEX_RE.sub(" ", text)
    words = []
    for raw in rest.split():
        t = _word_token(raw)
        if re.fullmatch(r"[A-Z]{10,}", t):
            add("sequence", t)
        elif len(t) >= 5 and re.fullmatch(r"[A-Za-z0-9@+\-\[\]()=#%/\\.:*,']+", t) and re.search(r"[A-Za-z]", t) \
                and re.search(r"[=#\[\]()@]", t) and not re.fullmatch(r"[A-Za-z]+\([A-Za-z]+\)", t) \
                and re.search(r"\d|[=#@]|\(.*\)", t):
            add("identifier", t)  # SMILES, IUPAC fragments, "g=10m/s2"
        elif _formula(t):
            add("formula", t)
        else:
            words.append(raw)
    rest = " ".join(words)
    for m in _NUM_RE.finditer(rest):
        try:
            add("number", canonical_number(m.group(0)))
        except ValueError:
            continue
    for m in _UNIT_AFTER_RE.finditer(rest):
        unit = m.group(1).rstrip(".-")
        atoms = [a for a in re.split(r"[/^·.\-\d]+", unit) if a]
        if atoms and all(a in _UNIT_ATOMS for a in atoms):
            add("unit", unit)
    return out


def numbers_in(text: str, words: bool = True, standalone: bool = False) -> set[str]:
    """Canonical numbers written in ``text`` (digits, and cardinal number words when ``words``).

    ``standalone`` skips digits glued to a letter or ``_`` (formula counts, subscripts, SMILES ring labels).

    >>> sorted(numbers_in("a 1,000 g mass and four-sites at -0.50 eV"))
    ['-0.5', '0.5', '1000', '4']
    >>> sorted(numbers_in("$SF_6$ in H2O, 6 of them", standalone=True))
    ['6']
    """
    text = unicodedata.normalize("NFKC", text).replace("−", "-")
    out = set()
    glued = r"(?<![A-Za-z_\d.])" if standalone else ""
    for m in re.finditer(glued + r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?", text):
        try:
            c = canonical_number(m.group(0))
        except ValueError:
            continue
        out.add(c)
        out.add(c.lstrip("-"))
    for w in re.findall(r"[a-z]+", text.lower()) if words else ():
        if w in _NUMBER_WORDS:
            out.add(_NUMBER_WORDS[w])
    return out


def missing_tokens(tokens: Sequence[Token], variant: str) -> list[Token]:
    """The ``tokens`` of an original that ``variant`` does not contain.

    >>> missing_tokens(protected_tokens("Heat 2 kg of NaCl by 5 K."), "Warm 2 kg of NaCl by five kelvin.")
    [Token(kind='unit', text='K')]
    """
    if not tokens:
        return []
    v = unicodedata.normalize("NFKC", variant).replace("−", "-")
    flat, latex, nums = _nospace(v), _latex_norm(v), numbers_in(v)
    missing = []
    for t in tokens:
        if t.kind == "latex":
            ok = t.text in latex
        elif t.kind == "number":
            ok = t.text in nums
        elif t.kind == "unit":
            ok = re.search(rf"(?<![A-Za-z]){re.escape(t.text)}(?![A-Za-z])", v) is not None
        else:
            ok = t.text in flat
        if not ok:
            missing.append(t)
    return missing
