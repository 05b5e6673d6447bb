"""core.quantity against apimachinery's own test table.

The table below is our transcription of ``TestQuantityParse`` in kubernetes/kubernetes
``staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go`` (v0.37.2 / Kubernetes
v1.37.2): every valid entry (all of them are non-negative, so all are valid memory amounts), with
the expected ``Quantity.Value()`` in bytes. The values were checked against Go's
``resource.ParseQuantity(s).Value()`` from that release; the one deliberate difference is marked.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory_hygiene.core.quantity import (
    MAX_INT64,
    QuantityError,
    parse_bytes,
    parse_decimal,
)

Ki, Mi, Gi, Ti, Pi, Ei = (1024**i for i in range(1, 7))

# (input, Value() in bytes). Value() rounds *up* to a whole unit.
UPSTREAM_VALID = [
    ("0", 0),
    ("0n", 0),
    ("0u", 0),
    ("0m", 0),
    ("0Ki", 0),
    ("0k", 0),
    ("0Mi", 0),
    ("0M", 0),
    ("0Gi", 0),
    ("0G", 0),
    ("0Ti", 0),
    ("0T", 0),
    # "Quantity less numbers are allowed"
    ("1", 1),
    # binary suffixes
    ("1Ki", 1 * Ki),
    ("8Ki", 8 * Ki),
    ("7Mi", 7 * Mi),
    ("6Gi", 6 * Gi),
    ("5Ti", 5 * Ti),
    ("4Pi", 4 * Pi),
    ("3Ei", 3 * Ei),
    ("10Ti", 10 * Ti),
    ("100Ti", 100 * Ti),
    # decimal suffixes; sub-unit amounts round up to one byte
    ("5n", 1),
    ("4u", 1),
    ("3m", 1),
    ("9", 9),
    ("8k", 8_000),
    ("50k", 50_000),
    ("7M", 7_000_000),
    ("6G", 6_000_000_000),
    ("5T", 5 * 10**12),
    ("40T", 40 * 10**12),
    ("300T", 300 * 10**12),
    ("2P", 2 * 10**15),
    ("1E", 10**18),
    # decimal exponents
    ("1E-3", 1),
    ("1e3", 1_000),
    ("1E6", 10**6),
    ("1e9", 10**9),
    ("1E12", 10**12),
    ("1e15", 10**15),
    ("1E18", 10**18),
    # "nonstandard but still parsable"
    ("1e14", 10**14),
    ("1e13", 10**13),
    ("100.035k", 100_035),
    # "things that look like floating point"
    ("0.001", 1),
    ("0.0005k", 1),  # 0.5
    ("0.005", 1),
    ("0.05", 1),
    ("0.5", 1),
    ("0.00050k", 1),
    ("0.00500", 1),
    ("0.05000", 1),
    ("0.50000", 1),
    ("0.5e0", 1),
    ("0.5e-1", 1),
    ("0.5e-2", 1),
    ("10.035M", 10_035_000),
    ("1.2e3", 1_200),
    ("1.3E+6", 1_300_000),
    ("1.40e9", 1_400_000_000),
    ("1.53E12", 1_530_000_000_000),
    ("1.6e15", 16 * 10**14),
    ("1.7E18", 17 * 10**17),
    ("9.01", 10),
    ("8.1k", 8_100),
    ("7.123456M", 7_123_456),
    ("6.987654321G", 6_987_654_321),
    ("5.444T", 5_444 * 10**9),
    ("40.1T", 401 * 10**11),
    ("300.2T", 3_002 * 10**11),
    ("2.5P", 25 * 10**14),
    ("1.01E", 101 * 10**16),
    # "things that saturate/round"
    ("3.001n", 1),
    ("1.1E-9", 1),
    ("0.0000000001", 1),
    ("0.0000000005", 1),
    ("0.00000000050", 1),
    ("0.5e-9", 1),
    ("0.9n", 1),
    ("0.00000012345", 1),
    ("0.00000012354", 1),
    ("9Ei", MAX_INT64),  # binary amounts are capped at the int64 maximum
    ("9223372036854775807Ki", MAX_INT64),
    ("12E", MAX_INT64),  # DIFFERENCE: Go's Value() overflows int64 and returns 0; we saturate
    # "we'll accept fractional binary stuff, too"
    ("100.035Ki", 102_436),  # 102435.84 -> ceil
    ("0.5Mi", 512 * Ki),
    ("0.05Gi", 53_687_092),  # 53687091.2 -> ceil
    ("0.025Ti", 27_487_790_695),  # 27487790694.4 -> ceil
    # "things written by trolls"
    ("0.000000000001Ki", 1),
    (".001", 1),
    (".0001k", 1),
    ("1.", 1),
    ("1.G", 10**9),
]

# The invalid list of TestQuantityParse, plus the empty string it checks first.
UPSTREAM_INVALID = [
    "",
    "1.1.M",
    "1+1.0M",
    "0.1mi",
    "0.1am",
    "aoeu",
    ".5i",
    "1i",
    "-3.01i",
    "-3.01e-",
    " 1",  # "trailing whitespace is forbidden" (leading too)
    "1 ",
]

# What kubernetes.utils.parse_quantity accepts but the API server does not, and what Go's lax
# parser lets through as zero although the documented grammar needs a digit.
OUR_INVALID = [
    "1K",  # decimal kilo is "k"
    "1ki",
    "1.5.5",
    "1_000",
    "Infinity",
    "NaN",
    "1e",
    "1e1.5",
    "0x10",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: Decimal() takes it, Kubernetes does not
    "1\n",
    "Ki",  # Go: 0
    "+",  # Go: 0
    "-",  # Go: 0
    ".",  # Go: 0
    "Mi",
]


@pytest.mark.parametrize(("text", "expected"), UPSTREAM_VALID)
def test_upstream_valid_quantities(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(("text", "expected"), UPSTREAM_VALID)
def test_explicit_plus_sign_is_the_same_value(text, expected):
    assert parse_bytes("+" + text) == expected


@pytest.mark.parametrize(("text", "expected"), UPSTREAM_VALID)
def test_negative_memory_is_rejected_unless_zero(text, expected):
    # Upstream checks that "-"+input parses to the negated value; for memory a negative amount is
    # meaningless, so it must raise -- except minus zero, which is zero.
    if expected == 0:
        assert parse_bytes("-" + text) == 0
    else:
        with pytest.raises(QuantityError, match=r"negative"):
            parse_bytes("-" + text)


@pytest.mark.parametrize("text", UPSTREAM_INVALID + OUR_INVALID)
def test_invalid_quantities_raise_and_name_the_input(text):
    with pytest.raises(QuantityError) as info:
        parse_bytes(text)
    assert repr(text) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "nano_units"),
    [
        # ParseQuantity rounds up to nano units before Value() rounds to units (the "expect"
        # column of the upstream table for these entries).
        ("3.001n", 4),
        ("1.1E-9", 2),
        ("0.0000000001", 1),
        ("0.5e-9", 1),
        ("0.00000012345", 124),
        ("0.00000012354", 124),
        ("0.000000000001Ki", 2),
    ],
)
def test_nano_rounding_like_parse_quantity(text, nano_units):
    assert parse_decimal(text) == Decimal(nano_units) * Decimal("1e-9")


def test_decimal_keeps_exact_value_and_sign():
    assert parse_decimal("100.035Ki") == Decimal("102435.84")
    assert parse_decimal("-1.5Gi") == -Decimal(3 * Gi) / 2
    assert parse_decimal("100m") != parse_decimal("200m")  # cpu comparisons need exactness


def test_long_mantissas_are_not_rounded_to_28_digits():
    assert parse_bytes("1.00000000000000000000000000001") == 2
    assert parse_bytes("1.00000000000000000000000000001Ki") == 1025


def test_huge_and_tiny_exponents():
    assert parse_bytes("1e400") == MAX_INT64
    assert parse_bytes("1e-400") == 1


def test_numbers_are_accepted_as_json_numbers():
    assert parse_bytes(1024) == 1024
    assert parse_bytes(1.5) == 2
    assert parse_bytes(1e3) == 1000
    assert parse_bytes(0) == 0


@pytest.mark.parametrize("value", [-1, -0.5, float("inf"), float("nan"), True, None, [], b"1"])
def test_bad_python_values(value):
    with pytest.raises(QuantityError):
        parse_bytes(value)


MULTIPLIERS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
               "Ki": Ki, "Mi": Mi, "Gi": Gi, "Ti": Ti}


@given(n=st.integers(min_value=0, max_value=10**6), suffix=st.sampled_from(sorted(MULTIPLIERS)))
def test_integer_with_suffix(n, suffix):
    assert parse_bytes(f"{n}{suffix}") == n * MULTIPLIERS[suffix]


@given(
    whole=st.integers(min_value=0, max_value=10**6),
    frac=st.text(alphabet="0123456789", min_size=1, max_size=12),
    suffix=st.sampled_from(sorted(MULTIPLIERS)),
)
def test_fraction_with_suffix_rounds_up(whole, frac, suffix):
    exact = (whole + Fraction(int(frac), 10 ** len(frac))) * MULTIPLIERS[suffix]
    # Go rounds up to nano first; for a non-negative value ceil(ceil_nano(x)) == ceil(x).
    assert parse_bytes(f"{whole}.{frac}{suffix}") == math.ceil(exact)


@given(n=st.integers(min_value=0, max_value=10**15), exp=st.integers(min_value=0, max_value=3))
def test_exponent_form(n, exp):
    assert parse_bytes(f"{n}e{exp}") == n * 10**exp
    assert parse_bytes(f"{n}E+{exp}") == n * 10**exp


@given(n=st.integers(min_value=1, max_value=10**12), suffix=st.sampled_from(sorted(MULTIPLIERS)))
def test_negative_always_rejected(n, suffix):
    with pytest.raises(QuantityError):
        parse_bytes(f"-{n}{suffix}")
