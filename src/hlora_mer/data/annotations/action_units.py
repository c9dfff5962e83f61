"""Action units as data: the owners' AU codes parsed into sets of AU records.

The annotation files write facial action units (FACS) as short codes: ``4+7``, ``R12A+L14``, ``A14C``,
``T18+39``, ``ref(5)+20C+25+26``, ``(R6 or R12)+R15``, ``10A/B``, ``?``, ``AU12``, ``1,2`` (also with the
Chinese comma). :func:`parse_action_units` turns one such cell into a frozenset of :class:`AU` records
(number, side, modifier, intensity, flags) and lists each ambiguity rule it applied, so that
``hlora-mer data check`` and ``docs/datasets.md`` can show them. A code it cannot read is reported in
``ParsedAUs.unparsed``, never dropped silently and never raised.

Grammar of one AU token (after the rules below have split alternatives apart)::

    [AU] [L|R|A|T|B] NUMBER [A-E] [(k)] [?]      e.g. R12A, A14C, T18, B23, 43E, AU12, 12(k), 13?
    ref( TOKEN )                                 a reference AU (SAMM), see RULE_REF

* ``L`` / ``R``: unilateral left / right (``side``);
* ``A``: asymmetric (SAMM's note: "A2 asymmetric"), ``T`` / ``B``: top / bottom lip (FACS), kept as
  ``modifier``;
* trailing ``A``..``E``: FACS intensity (trace..maximum), kept as ``intensity``.

Active AUs (:func:`active_numbers`) are those that take part in the expression: every record except
reference AUs, ``(k)`` AUs and the alternatives of an ``or`` that are not its reading (``RULE_OR``). The
one-hot table (:func:`au_table`) and the objective classes (:func:`objective_class_from_aus`) use the
active AUs; :func:`au_uncertain_table` keeps the doubt. Rules and measured agreement: ``docs/datasets.md``.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import pandas as pd

logger = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class AU:
    """One action unit as coded by the owner.

    Attributes:
        number: FACS AU number (``12``).
        side: ``L`` or ``R`` for a unilateral AU, None otherwise.
        modifier: ``A`` (asymmetric), ``T`` (top lip) or ``B`` (bottom lip), None otherwise.
        intensity: FACS intensity letter ``A``..``E``, None where not coded.
        ref: written ``ref(...)``: a reference AU, not part of the movement (see ``RULE_REF``).
        k: written with a ``(k)`` suffix (4DME; see ``RULE_K_SUFFIX``).
        uncertain: in doubt: one of the owner's alternatives (``or`` / ``/``, see ``RULE_OR`` /
            ``RULE_SLASH``) or written with a ``?`` (``RULE_QUESTION_SUFFIX``).
        alternative: an alternative of an ``or`` that is not the reading (``RULE_OR``): kept, not active.
    """

    number: int
    side: str | None = None
    modifier: str | None = None
    intensity: str | None = None
    ref: bool = False
    k: bool = False
    uncertain: bool = False
    alternative: bool = False

    @property
    def active(self) -> bool:
        """Part of the expression: neither a reference AU, a ``(k)`` AU nor an alternative not read."""
        return not (self.ref or self.k or self.alternative)

    def __str__(self) -> str:
        text = f"{self.side or ''}{self.modifier or ''}{self.number}{self.intensity or ''}"
        if self.k:
            text += "(k)"
        if self.ref:
            text = f"ref({text})"
        text = f"{text}?" if self.uncertain else text
        return f"or {text}" if self.alternative else text


@dataclass(frozen=True)
class Rule:
    """A written rule for one kind of ambiguous code."""

    name: str
    text: str


RULE_OR = Rule(
    "or_first_alternative",
    "'X or Y' (SAMM: '(R6 or R12)+R15', 'L12 or L14', 'R12 or R14', 'R14A or 17A or 24A'): one alternative is "
    "the reading: it is active and marked uncertain; the others are kept as records with alternative=True, "
    "marked uncertain, and are not active (one-hot table, objective classes, AU frequencies). The reading is "
    "the first alternative, unless the owners' objective class of the row says otherwise (RULE_OR_OWNER). "
    "Setting every alternative active would code AUs the owners say are not all there.",
)
"""SAMM ``or`` entries: one alternative active (the first, or the one the owners' class implies), all
marked ``uncertain``; the others kept with ``alternative=True``."""

RULE_OR_OWNER = Rule(
    "or_owner_class",
    "Where the row has an owners' objective class that the first alternative's reading contradicts and "
    "another alternative's reading gives, that alternative is the reading (SAMM 014_5_2 'R12 or R14', class "
    "VII: R14; 007_6_1 and 007_6_5 '(R6 or R12)+R15', VII: R12+R15; 011_4_2 'L12 or L14', class I, and "
    "035_7_2 keep the first). The readings then fit the owners' classes on all 5 SAMM 'or' rows (the first "
    "alternative alone: 2 of 5; every alternative active: 4 of 5) and tvaranka/meb's hand-picked readings "
    "on 4 (meb reads 011_4_2 as L14, which contradicts the owners' class I).",
)
"""An ``or`` resolved by the row's owners' objective class."""

RULE_SLASH = Rule(
    "slash_first_modifier",
    "'/' means 'or' (SAMM's symbol key). In the files it only separates alternatives of a modifier or an "
    "intensity of one AU ('10A/B', '4A/B': intensity A or B; 'A/L12': asymmetric or left AU12): the AU is "
    "certain, so it is kept with the first written alternative and marked uncertain. A '/' between AU "
    "numbers ('12/14') is read like 'or' (RULE_OR).",
)
"""``/`` = or: the AU is kept with the first alternative's modifier/intensity, marked ``uncertain``."""

RULE_UNKNOWN = Rule(
    "question_mark_unknown",
    "A cell that is only '?' (CASME II 20140508: 05/EP05_03, 05/EP07_01, 05/EP13_04f, 19/EP11_01f, "
    "26/EP13_01; 20190701 fills them in) means the AUs are unknown, not absent: the sample gets no AU set, "
    "is left out of the one-hot table and gets no objective class from AUs.",
)
"""CASME II ``?`` cells: AUs unknown (None), not an empty set."""

RULE_REF = Rule(
    "ref_not_active",
    "'ref(X)' (SAMM: 'ref(5)+20C+25+26', '12A+ref(24)', 'ref(7B)+43') marks an AU the coder refers to but "
    "that is not part of the movement: it is kept with ref=True and left out of the active AUs (one-hot "
    "table, objective classes). With it left out, 7 of the 9 SAMM 'ref' rows get the owners' objective "
    "class; counted as active, 4 of 9 (011_6_13, 014_3_3 and 018_3_1 become VII).",
)
"""SAMM ``ref(X)``: kept with ``ref=True``, not active."""

RULE_K_SUFFIX = Rule(
    "k_suffix_not_active",
    "A '(k)' suffix (4DME, e.g. 'AU12(k)') is kept with k=True and left out of the active AUs, as "
    "tvaranka/meb does by default (it zeroes '(k)' AUs).",
)
"""4DME ``(k)``: kept with ``k=True``, not active."""

RULE_DESCRIPTOR = Rule(
    "non_au_descriptor",
    "A known FACS descriptor without an AU number ('soft focus', SAMM 026_5_1) is not an AU: it is left "
    "out of the set and listed. Any other text is unparsed and reported.",
)
"""Known non-AU descriptors (``soft focus``): left out of the set, listed."""

RULE_QUESTION_SUFFIX = Rule(
    "question_suffix_uncertain",
    "A '?' written after an AU (CAS(ME)^3 Part C 10/1: '13?') marks that AU as uncertain, the way SAMM's "
    "symbol key uses '?' for an unclear AU: it is kept, active, with uncertain=True (Part C 10/1 is AU13, "
    "class VII). A cell that is only '?' is RULE_UNKNOWN.",
)
"""``13?``: the AU is kept, active, marked ``uncertain``."""

RULES: tuple[Rule, ...] = (
    RULE_OR,
    RULE_OR_OWNER,
    RULE_SLASH,
    RULE_UNKNOWN,
    RULE_QUESTION_SUFFIX,
    RULE_REF,
    RULE_K_SUFFIX,
    RULE_DESCRIPTOR,
)

DESCRIPTORS: frozenset[str] = frozenset({"soft focus"})
"""Non-AU words found in AU cells, read by ``RULE_DESCRIPTOR``."""

_TOKEN = re.compile(r"^(?:AU)?\s*([LRATB])?\s*(\d{1,2})\s*([A-E])?\s*(\(k\))?\s*(\?)?$", re.IGNORECASE)
_REF = re.compile(r"^ref\s*\((.*)\)$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[+,，;]")


@dataclass(frozen=True)
class RuleApplication:
    """One use of a rule on one code."""

    rule: str
    code: str


@dataclass(frozen=True)
class ParsedAUs:
    """The result of parsing one AU cell.

    Attributes:
        code: the cell as written (stripped text; ints as text).
        aus: the AU records, or None where the AUs are unknown (empty cell, ``?``).
        rules: the ambiguity rules applied, in order.
        unparsed: the parts that could not be read (each reported, never dropped silently).
    """

    code: str | None
    aus: frozenset[AU] | None
    rules: tuple[RuleApplication, ...] = ()
    unparsed: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unparsed


def _code_text(value: object) -> str | None:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and value != value:  # NaN: an empty cell
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+\.0", text):  # an int cell written out as float text by a CSV export
        text = text[:-2]
    return text or None


def _parse_token(token: str, *, ref: bool = False, uncertain: bool = False) -> AU | None:
    match = _TOKEN.match(token.strip())
    if match is None:
        return None
    prefix, number, intensity, k, question = match.groups()
    prefix = prefix.upper() if prefix else None
    return AU(
        number=int(number),
        side=prefix if prefix in ("L", "R") else None,
        modifier=prefix if prefix in ("A", "T", "B") else None,
        intensity=intensity.upper() if intensity else None,
        ref=ref,
        k=bool(k),
        uncertain=uncertain or bool(question),
    )


def _split_top(text: str) -> list[str]:
    """Split on ``+``/commas outside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if depth == 0 and _SEPARATORS.match(char):
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _slash(term: str) -> list[str] | str:
    """``10A/B`` -> ``10A``; ``A/L12`` -> ``A12``; ``12/14`` -> alternatives ``[12, 14]``."""
    left, right = (p.strip() for p in term.split("/", 1))
    if re.fullmatch(r"[A-E]", right) and _TOKEN.match(left):  # intensity alternatives: 10A/B
        return left
    if re.fullmatch(r"[LRATB]", left, re.IGNORECASE) and _TOKEN.match(right):  # modifier alternatives: A/L12
        m = re.match(r"^[LRATB]?(.*)$", right, re.IGNORECASE)
        return left + (m.group(1) if m else right)
    return [left, right]


def parse_action_units(value: object, *, owner_class: object = None) -> ParsedAUs:
    """Parse one AU cell of an annotation file.

    Args:
        value: the cell as read (text, int, float or missing).
        owner_class: the row's owners' objective class (``I``..``VII`` or 1..7), if the file has one: it
            picks the alternative of an ``or`` that is the reading (``RULE_OR_OWNER``).

    Returns:
        The records, the rules applied and the parts that could not be read. ``aus`` is None for a
        missing cell and for ``?`` (``RULE_UNKNOWN``).
    """
    code = _code_text(value)
    if code is None:
        return ParsedAUs(None, None)
    if code == "?":
        return ParsedAUs(code, None, (RuleApplication(RULE_UNKNOWN.name, code),))
    aus: set[AU] = set()
    groups: list[list[AU]] = []  # the alternatives of each 'or', in the order written
    rules: list[RuleApplication] = []
    unparsed: list[str] = []

    def note(rule: Rule) -> None:
        application = RuleApplication(rule.name, code)
        if application not in rules:
            rules.append(application)

    for term in _split_top(code):
        if not term:
            unparsed.append(term or "(empty term)")
            continue
        if term.lower() in DESCRIPTORS:
            note(RULE_DESCRIPTOR)
            continue
        inner = term[1:-1].strip() if term.startswith("(") and term.endswith(")") else term
        written = [a.strip() for a in re.split(r"\s+or\s+", inner, flags=re.IGNORECASE)]
        if len(written) > 1:
            note(RULE_OR)
        candidates: list[str] = []
        slashed = False
        for alternative in written:
            if "/" in alternative and not _REF.match(alternative):
                note(RULE_SLASH)
                resolved = _slash(alternative)
                candidates.extend(resolved if isinstance(resolved, list) else [resolved])
                slashed = True
            else:
                candidates.append(alternative)
        uncertain = len(candidates) > 1 or slashed
        group: list[AU] = []
        for candidate in candidates:
            ref_match = _REF.match(candidate)
            if ref_match:
                note(RULE_REF)
                au = _parse_token(ref_match.group(1), ref=True, uncertain=uncertain)
            else:
                au = _parse_token(candidate, uncertain=uncertain)
            if au is None:
                unparsed.append(candidate)
                continue
            if au.k:
                note(RULE_K_SUFFIX)
            if candidate.rstrip().endswith("?"):
                note(RULE_QUESTION_SUFFIX)
            group.append(au)
        if len(group) > 1:
            groups.append(group)
        else:
            aus.update(group)
    if groups:
        chosen = _read_alternatives(frozenset(aus), groups, normalize_objective_class(owner_class))
        if chosen != tuple(group[0] for group in groups):
            note(RULE_OR_OWNER)
        for group, pick in zip(groups, chosen, strict=True):
            aus.update(au if au == pick else replace(au, alternative=True) for au in group)
    return ParsedAUs(code, frozenset(aus), tuple(rules), tuple(unparsed))


def _read_alternatives(base: frozenset[AU], groups: list[list[AU]], owner: str | None) -> tuple[AU, ...]:
    """The alternative read from each group: the first ones, unless the owners' class ``owner``
    contradicts their reading and another choice gives it (``RULE_OR_OWNER``; the first such choice in
    the order written)."""
    first = tuple(group[0] for group in groups)
    if owner is None or objective_class_from_aus(base | set(first)) == owner:
        return first
    for choice in itertools.product(*groups):
        if objective_class_from_aus(base | set(choice)) == owner:
            return choice
    return first


def active_numbers(aus: Iterable[AU] | None) -> frozenset[int] | None:
    """The AU numbers taking part in the expression (no ``ref``/``(k)`` AUs); None for unknown AUs."""
    if aus is None:
        return None
    return frozenset(au.number for au in aus if au.active)


def parse_column(table: pd.DataFrame) -> pd.Series:
    """``ParsedAUs`` per row of a sample table's ``action_units`` column, indexed by ``sample_id``; a row's
    ``objective_class``, where the table has one, is passed as its owners' class (``RULE_OR_OWNER``)."""
    owners = table["objective_class"] if "objective_class" in table.columns else [None] * len(table)
    return pd.Series(
        [parse_action_units(v, owner_class=o) for v, o in zip(table["action_units"], owners, strict=True)],
        index=pd.Index(table["sample_id"], name="sample_id"),
    )


@dataclass(frozen=True)
class AUReport:
    """Rule applications and unparsed codes of a sample table."""

    rules: tuple[tuple[str, RuleApplication], ...] = ()
    unparsed: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    frequencies: Counter[int] = field(default_factory=Counter)


def au_report(table: pd.DataFrame) -> AUReport:
    """Every rule application ``(sample_id, application)``, every unparsed code ``(sample_id, code,
    parts)`` and the frequency of each active AU over the table."""
    rules: list[tuple[str, RuleApplication]] = []
    unparsed: list[tuple[str, str, tuple[str, ...]]] = []
    freq: Counter[int] = Counter()
    for sid, parsed in parse_column(table).items():
        rules.extend((str(sid), r) for r in parsed.rules)
        if parsed.unparsed:
            unparsed.append((str(sid), parsed.code or "", parsed.unparsed))
        freq.update(active_numbers(parsed.aus) or ())
    return AUReport(tuple(rules), tuple(unparsed), freq)


def _one_hot(table: pd.DataFrame, *, uncertain: bool) -> pd.DataFrame:
    rows: dict[str, frozenset[AU]] = {}
    for sid, parsed in parse_column(table).items():
        if parsed.aus is not None:
            rows[str(sid)] = frozenset(au for au in parsed.aus if not (au.ref or au.k))  # active or alternative
    present = sorted({au.number for aus in rows.values() for au in aus})
    data = [
        [int(any(au.number == n and (au.uncertain if uncertain else au.active) for au in aus)) for n in present]
        for aus in rows.values()
    ]
    return pd.DataFrame(
        data, index=pd.Index(list(rows), name="sample_id"), columns=[f"AU{n}" for n in present], dtype=int
    )


def au_table(table: pd.DataFrame) -> pd.DataFrame:
    """One-hot table of the active AUs: index ``sample_id``, columns ``AU1``, ``AU2``... (int 0/1, numeric
    order) for every AU present, active or as an ``or`` alternative. An ``or`` cell sets only the
    alternative that is the reading (``RULE_OR``); :func:`au_uncertain_table` keeps the doubt. Rows whose AUs
    are unknown (no cell, ``?``) are left out; the rule list says which."""
    return _one_hot(table, uncertain=False)


def au_uncertain_table(table: pd.DataFrame) -> pd.DataFrame:
    """The uncertain flags of :func:`au_table` (same index and columns): 1 where the row codes that AU in
    doubt, as an ``or`` alternative (read or not), with a ``/`` or with a ``?``; 0 elsewhere."""
    return _one_hot(table, uncertain=True)


# ---------------------------------------------------------------------------------------------------
# MEGC2018 objective classes (Davison et al., 2018, "Objective classes for micro-facial expression
# recognition", Table 2): each class is a list of AU combinations.

OBJECTIVE_CLASSES: dict[str, tuple[frozenset[int], ...]] = {
    "I": tuple(frozenset(c) for c in ((6,), (12,), (6, 12), (6, 7, 12), (7, 12))),
    "II": tuple(frozenset(c) for c in ((1, 2), (5,), (25,), (1, 2, 25), (25, 26), (5, 24))),
    "III": tuple(frozenset(c) for c in ((23,), (4,), (4, 7), (4, 5), (4, 5, 7), (17, 24), (4, 6, 7), (4, 38))),
    "IV": tuple(
        frozenset(c)
        for c in ((10,), (9,), (4, 9), (4, 40), (4, 5, 40), (4, 7, 9), (4, 9, 17), (4, 7, 10), (4, 5, 7, 9), (7, 10))
    ),
    "V": tuple(frozenset(c) for c in ((1,), (15,), (1, 4), (6, 15), (15, 17))),
    "VI": tuple(frozenset(c) for c in ((1, 2, 4), (20,))),
}
"""Class -> AU combinations; any other combination is class ``VII``."""

OBJECTIVE_RULE = Rule(
    "objective_exact_combination",
    "A sample's class is the class whose list holds exactly its set of active AU numbers (sides and "
    "intensities ignored); any other set is VII. This reproduces the owners' classes best (CAS(ME)^3 v2 "
    "860/860, CASME II 20190701 column 253/255, SAMM 148/159); the alternative (``exact=False``: the "
    "class of the largest listed combination inside the set, VII on a tie) agrees less on every file.",
)
"""How a sample's AUs are matched to the combinations of ``OBJECTIVE_CLASSES``."""


def objective_class_from_aus(aus: Iterable[AU] | Iterable[int] | None, *, exact: bool = True) -> str | None:
    """The MEGC2018 objective class (``I``..``VII``) of a set of AUs.

    Args:
        aus: AU records (their active numbers are used) or AU numbers; None (unknown AUs) gives None.
        exact: ``OBJECTIVE_RULE`` (default); False takes the class of the largest listed combination
            contained in the set (VII on a tie between classes or when none is contained).
    """
    if aus is None:
        return None
    numbers = frozenset(
        au.number if isinstance(au, AU) else int(au) for au in aus if not isinstance(au, AU) or au.active
    )
    if exact:
        for name, combos in OBJECTIVE_CLASSES.items():
            if numbers in combos:
                return name
        return "VII"
    best, size = set(), 0
    for name, combos in OBJECTIVE_CLASSES.items():
        for combo in combos:
            if combo <= numbers:
                if len(combo) > size:
                    best, size = {name}, len(combo)
                elif len(combo) == size:
                    best.add(name)
    return best.pop() if len(best) == 1 else "VII"


_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII")


def normalize_objective_class(value: object) -> str | None:
    """``3``, ``3.0``, ``'III'`` -> ``'III'``; missing -> None."""
    text = _code_text(value)
    if text is None:
        return None
    if text.isdigit() and 1 <= int(text) <= 7:
        return _ROMAN[int(text) - 1]
    return text.upper() if text.upper() in _ROMAN else text


@dataclass(frozen=True)
class Agreement:
    """Objective classes from AUs against the owners' classes."""

    compared: int
    agreed: int
    disagreements: pd.DataFrame  # sample_id, action_units, owner, from_aus

    @property
    def rate(self) -> float:
        return self.agreed / self.compared if self.compared else float("nan")


def objective_agreement(table: pd.DataFrame, *, exact: bool = True) -> Agreement:
    """Compare the ``objective_class`` column with the class computed from ``action_units``.

    Rows without an owner's class or with unknown AUs are not compared.
    """
    rows = []
    agreed = compared = 0
    for sid, code, owner in zip(table["sample_id"], table["action_units"], table["objective_class"], strict=True):
        owner_class = normalize_objective_class(owner)
        computed = objective_class_from_aus(parse_action_units(code, owner_class=owner).aus, exact=exact)
        if owner_class is None or computed is None:
            continue
        compared += 1
        if owner_class == computed:
            agreed += 1
        else:
            code_text = _code_text(code)
            rows.append({"sample_id": sid, "action_units": code_text, "owner": owner_class, "from_aus": computed})
    frame = pd.DataFrame(rows, columns=["sample_id", "action_units", "owner", "from_aus"])
    return Agreement(compared, agreed, frame)
