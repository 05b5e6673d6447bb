"""Kubernetes resource quantities ("128Mi", "3G", "1.5e9") as numbers.

The grammar and rounding follow apimachinery's ``resource.Quantity``
(kubernetes/kubernetes staging/src/k8s.io/apimachinery/pkg/api/resource/quantity.go, read at
v0.37.2 / Kubernetes v1.37.2):

- ``<quantity> ::= <sign>? <digits>[.<digits>?] | <sign>? .<digits>`` followed by an optional
  suffix: binary ``Ki Mi Gi Ti Pi Ei``, decimal ``n u m k M G T P E`` or an exponent ``e<int>`` /
  ``E<int>``. No whitespace anywhere. ``ParseQuantity`` rounds a value up (away from zero) to
  nano units, caps binary-suffixed amounts at the int64 maximum, and ``Value()`` rounds up to a
  whole unit (ceil).

Deliberate differences, all toward rejecting garbage:

- ``kubernetes.utils.parse_quantity`` (which we use for the arithmetic) accepts things the API
  server rejects: surrounding whitespace, ``"1K"``, ``"1_000"``, ``"Infinity"``, ``"NaN"``, Unicode
  digits. We check the grammar first.
- Go's hand-written parser lets a *digit-less* number through as zero (``"Ki"``, ``"+"``, ``"."``
  parse as 0); the documented grammar requires a digit, and so do we.
- A negative memory amount is a valid Quantity but meaningless as memory: ``parse_bytes`` rejects it
  (``"-0"`` is zero and accepted).
- Go's ``Value()`` silently overflows int64 for huge decimal amounts (``"12E"`` gives 0); we
  saturate every byte count at 2**63 - 1, as Go already does for binary suffixes.
"""

from __future__ import annotations

import decimal
import functools
import math
import re
from decimal import ROUND_CEILING, ROUND_UP, Decimal

from kubernetes.utils import parse_quantity

MAX_INT64 = 2**63 - 1

_GRAMMAR = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"  # number: "1", "1.", "1.5", ".5"
    r"(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"  # binary / decimal suffix or exponent
)
_BINARY_SUFFIX = re.compile(r"[KMGTPE]i\Z")
_NANO = Decimal("1e-9")
_MAX = Decimal(MAX_INT64)


class QuantityError(ValueError):
    """A string is not a valid Kubernetes quantity (or not a valid amount of memory)."""


class MalformedObjectError(ValueError):
    """A field of a Kubernetes object cannot be interpreted.

    The message names the object (``Pod default/web-0``) and the field path
    (``spec.containers[0].resources.limits.memory``).
    """

    def __init__(self, obj: object, field: str, problem: str) -> None:
        self.object = object_ref(obj)
        self.field = field
        self.problem = problem
        where = f"{self.object}: {field}" if field else self.object
        super().__init__(f"{where}: {problem}")


def object_ref(obj: object) -> str:
    """``"<Kind> <namespace>/<name>"`` (or ``"<Kind> <name>"``) for messages; never raises."""
    if not isinstance(obj, dict):
        return f"<{type(obj).__name__}>"
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    kind = obj.get("kind") if isinstance(obj.get("kind"), str) else "object"
    name = meta.get("name") if isinstance(meta.get("name"), str) else "<unnamed>"
    ns = meta.get("namespace")
    return f"{kind} {ns}/{name}" if isinstance(ns, str) and ns else f"{kind} {name}"


def parse_decimal(q: str | int | float) -> Decimal:
    """A quantity as an exact Decimal, rounded like ``resource.ParseQuantity``.

    Values keep their sign; non-zero values are rounded away from zero to a multiple of 1e-9, and
    binary-suffixed amounts are capped at 2**63 - 1. Raises QuantityError naming the input.
    """
    if isinstance(q, str):
        return _parse_text(q)  # the same few strings ("128Mi", "1Gi") recur on every pod
    return _parse(q)


@functools.lru_cache(maxsize=8192)
def _parse_text(q: str) -> Decimal:
    return _parse(q)


def _parse(q: str | int | float) -> Decimal:
    text = _as_text(q)
    if not _GRAMMAR.fullmatch(text):
        raise QuantityError(f"invalid quantity {q!r}: not of the form <number>[suffix]")
    # parse_quantity multiplies by the suffix in the current decimal context: give it room so
    # that long mantissas are not rounded to 28 digits.
    with decimal.localcontext() as ctx:
        ctx.prec = max(64, 2 * len(text) + 40)
        ctx.Emax = decimal.MAX_EMAX
        ctx.Emin = decimal.MIN_EMIN
        try:
            value = Decimal(parse_quantity(text))
        except (ValueError, ArithmeticError) as exc:  # pragma: no cover - grammar checked above
            raise QuantityError(f"invalid quantity {q!r}: {exc}") from exc
        if value and value.as_tuple().exponent < -9:
            value = value.quantize(_NANO, rounding=ROUND_UP)
        if _BINARY_SUFFIX.search(text) and abs(value) > _MAX:
            value = _MAX.copy_sign(value)
    return value


def bytes_of(value: Decimal) -> int:
    """A non-negative Decimal amount of memory as whole bytes: ceil, saturated at 2**63 - 1."""
    if value < 0:
        raise QuantityError(f"negative memory amount {value}")
    if value >= _MAX:
        return MAX_INT64
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def parse_bytes(q: str | int | float) -> int:
    """A memory quantity as whole bytes, rounded up as ``Quantity.Value()`` does.

    ``"128Mi"`` -> 134217728, ``"0.5"`` -> 1, ``"1e3"`` -> 1000. Raises QuantityError (a
    ValueError) whose message names the input for anything the API server would reject, and for
    negative amounts.
    """
    value = parse_decimal(q)
    if value < 0:
        raise QuantityError(f"invalid memory quantity {q!r}: negative")
    return bytes_of(value)


def _as_text(q: object) -> str:
    if isinstance(q, bool) or not isinstance(q, (str, int, float)):
        raise QuantityError(f"invalid quantity {q!r}: expected a string or a number")
    if isinstance(q, float) and not math.isfinite(q):
        raise QuantityError(f"invalid quantity {q!r}: not finite")
    # A JSON number reaches the API server's Quantity.UnmarshalJSON as its literal text; str()
    # of a Python int/float is that text ("1024", "1.5", "1e+20").
    return q if isinstance(q, str) else str(q)
