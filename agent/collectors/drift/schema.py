"""What each feature of a reference is: its kind (numeric or categorical), its role (a
model input, a model output, or an output that is a confidence score), and, for a
categorical feature, the categories the reference holds.

Declared when a reference is set (``vigil drift reference set --categorical COL,...
--output COL,... --confidence COL``), stored in the reference file's header, and used to
read every sample sent for it. A reference written before kinds existed has none in its
header: all its features are numeric inputs.

Categorical values travel as strings and live in the window as codes: the index of the
category in the reference's list, or :data:`UNSEEN_CODE` for a category the reference
never had. Codes keep the window one float matrix, so categorical features share its
ring buffer, its bounds and its locking with the numeric ones.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NUMERIC, CATEGORICAL = "numeric", "categorical"
KINDS = (NUMERIC, CATEGORICAL)
INPUT, OUTPUT, CONFIDENCE = "input", "output", "confidence"
ROLES = (INPUT, OUTPUT, CONFIDENCE)
# The name of the bucket of window values whose category the reference never had.
UNSEEN = "__unseen__"
UNSEEN_CODE = -1.0
# Categories one feature's reference may hold. Each is a column of every check's count
# table and may be a label value (the categories that moved most): past a thousand, a
# "category" is more likely an identifier (a user id, a free-text field) than a class.
MAX_CATEGORIES = 1000
# Longest category string: longer values are refused (reason category_too_long), as a
# class name this long is a serialisation bug (a whole record sent as one value).
MAX_CATEGORY_LEN = 200
# A confidence score is a probability. vigil_prediction_confidence's buckets end at 1, so a
# value outside would land in +Inf and pull its mean away: a logit or a raw score declared
# --confidence by mistake is refused rather than charted as a confidence.
CONFIDENCE_MIN, CONFIDENCE_MAX = 0.0, 1.0


def confidence_problem(name: str, value: float) -> str | None:
    """Why ``value`` cannot be a confidence score of column ``name``, or None."""
    if CONFIDENCE_MIN <= value <= CONFIDENCE_MAX:
        return None
    return (
        f"confidence column {name!r} holds {value:g}; a confidence score must lie in "
        f"[{CONFIDENCE_MIN:g}, {CONFIDENCE_MAX:g}]"
    )


class SchemaError(ValueError):
    """A declaration that cannot describe the reference; the message names the column."""


@dataclass(frozen=True)
class Schema:
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    roles: tuple[str, ...]
    # Categorical feature -> its categories, in code order.
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.kinds) == len(self.roles):
            raise SchemaError("kinds and roles must name every feature")
        for name, kind, role in zip(self.names, self.kinds, self.roles, strict=True):
            if kind not in KINDS:
                raise SchemaError(f"feature {name!r}: kind {kind!r} is not one of {KINDS}")
            if role not in ROLES:
                raise SchemaError(f"feature {name!r}: role {role!r} is not one of {ROLES}")
            if role == CONFIDENCE and kind != NUMERIC:
                raise SchemaError(f"feature {name!r}: a confidence score must be numeric")
            if kind == CATEGORICAL:
                check_categories(name, self.categories.get(name, ()))

    @classmethod
    def numeric(cls, names: Sequence[str]) -> Schema:
        """All numeric inputs: what a reference without declarations is."""
        names = tuple(names)
        return cls(names, (NUMERIC,) * len(names), (INPUT,) * len(names))

    @classmethod
    def declare(
        cls,
        names: Sequence[str],
        categorical: Iterable[str] = (),
        outputs: Iterable[str] = (),
        confidence: Iterable[str] = (),
        categories: Mapping[str, tuple[str, ...]] | None = None,
    ) -> Schema:
        """From the column lists a user gives; a column not in ``names`` is an error
        that names it."""
        names = tuple(names)
        known = set(names)
        cat, out, conf = set(categorical), set(outputs), set(confidence)
        for what, cols in (("categorical", cat), ("output", out), ("confidence", conf)):
            unknown = sorted(cols - known)
            if unknown:
                raise SchemaError(
                    f"{what} column {unknown[0]!r} is not a feature of the reference "
                    f"(its columns: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''})"
                )
        both = sorted(cat & conf)
        if both:
            raise SchemaError(f"column {both[0]!r} cannot be both categorical and a confidence")
        kinds = tuple(CATEGORICAL if n in cat else NUMERIC for n in names)
        roles = tuple(CONFIDENCE if n in conf else OUTPUT if n in out else INPUT for n in names)
        return cls(names, kinds, roles, dict(categories or {}))

    @property
    def plain(self) -> bool:
        """Numeric inputs only: the header needs no declarations (older agents read it)."""
        return all(k == NUMERIC for k in self.kinds) and all(r == INPUT for r in self.roles)

    @property
    def confidence(self) -> tuple[str, ...]:
        return tuple(n for n, r in zip(self.names, self.roles, strict=True) if r == CONFIDENCE)

    def check_confidence(self, values: np.ndarray) -> None:
        """Refuses a (rows x features) reference whose confidence columns leave [0, 1],
        naming the column, the first such row and its value."""
        for name in self.confidence:
            col = values[:, self.names.index(name)]
            bad = np.nonzero((col < CONFIDENCE_MIN) | (col > CONFIDENCE_MAX))[0]
            if bad.size:
                row = int(bad[0])
                raise SchemaError(
                    f"row {row}: {confidence_problem(name, float(col[row]))} ({bad.size:,} "
                    f"of {col.size:,} rows outside; a score on another scale belongs in "
                    "--output)"
                )

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(n for n, k in zip(self.names, self.kinds, strict=True) if k == CATEGORICAL)

    def is_output(self, i: int) -> bool:
        return self.roles[i] != INPUT

    def header(self) -> dict[str, Any]:
        """The reference file header's part for this schema (empty when plain)."""
        if self.plain:
            return {}
        return {
            "kinds": list(self.kinds),
            "roles": list(self.roles),
            "categories": {n: list(self.categories[n]) for n in self.categorical},
        }

    @classmethod
    def from_header(cls, names: Sequence[str], header: Mapping[str, Any]) -> Schema:
        """What :meth:`header` wrote; no declarations: all numeric inputs."""
        names = tuple(names)
        if "kinds" not in header and "roles" not in header:
            return cls.numeric(names)
        kinds, roles = header.get("kinds"), header.get("roles")
        cats = header.get("categories", {})
        if (
            not isinstance(kinds, list)
            or not isinstance(roles, list)
            or not isinstance(cats, dict)
            or not all(isinstance(v, list) for v in cats.values())
        ):
            raise SchemaError("kinds, roles and categories must be lists")
        return cls(names, tuple(kinds), tuple(roles), {str(k): tuple(v) for k, v in cats.items()})

    def codes(self) -> dict[str, dict[str, int]]:
        """Categorical feature -> {category: code}, for encoding samples."""
        return {n: {c: i for i, c in enumerate(self.categories[n])} for n in self.categorical}


def check_categories(feature: str, cats: Sequence[Any]) -> None:
    if len(cats) > MAX_CATEGORIES:
        raise SchemaError(
            f"categorical column {feature!r} has {len(cats):,} categories; at most "
            f"{MAX_CATEGORIES:,} are supported (is it an identifier rather than a class?)"
        )
    if len(set(cats)) != len(cats):
        raise SchemaError(f"categorical column {feature!r} lists a category twice")
    for c in cats:
        problem = category_problem(c)
        if problem is not None:
            raise SchemaError(f"categorical column {feature!r}: {problem}")


def category_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a category, or None."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    if len(value) > MAX_CATEGORY_LEN:
        return f"a category of {len(value):,} characters (at most {MAX_CATEGORY_LEN})"
    if value == UNSEEN:
        return f"{UNSEEN!r} is reserved for categories the reference never had"
    return None


class CaptureKinds:
    """The declarations of a reference being captured from live samples (``vigil drift
    reference set --bootstrap N --categorical ...``): which columns are categorical or
    outputs, and the categories seen so far, each given the next code as it first comes.

    Categories are learnt up to :data:`MAX_CATEGORIES` per column; a row bringing one more
    is refused (reason too_many_categories), so a sender cannot grow a capture without
    bound. Shared by the ingest threads: :meth:`code` takes a lock.
    """

    def __init__(
        self, categorical: Iterable[str], outputs: Iterable[str], confidence: Iterable[str]
    ) -> None:
        self.categorical = tuple(categorical)
        self.outputs = tuple(outputs)
        self.confidence = tuple(confidence)
        self.vocab: dict[str, dict[str, int]] = {c: {} for c in self.categorical}
        self.names: tuple[str, ...] | None = None  # fixed by the capture's first batch
        self._lock = threading.Lock()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CaptureKinds) and self.declared == other.declared

    __hash__ = None  # type: ignore[assignment]

    @property
    def declared(self) -> dict[str, list[str]]:
        """As a capture request file and a body's declarations spell them."""
        return {
            "categorical": list(self.categorical),
            "outputs": list(self.outputs),
            "confidence": list(self.confidence),
        }

    def code(self, feature: str, value: str) -> float | None:
        """The category's code, a new one for a new category; None past the cap."""
        with self._lock:
            seen = self.vocab[feature]
            c = seen.get(value)
            if c is None:
                if len(seen) >= MAX_CATEGORIES:
                    return None
                c = seen[value] = len(seen)
            return float(c)

    def schema(self, names: Sequence[str]) -> Schema:
        """The schema of the completed capture; raises SchemaError naming a declared
        column the samples did not have."""
        with self._lock:
            cats = {f: tuple(v) for f, v in self.vocab.items()}  # dicts keep code order
        return Schema.declare(names, self.categorical, self.outputs, self.confidence, cats)
