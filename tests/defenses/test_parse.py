"""Parsing ``--defense`` specs: canonical names, round trips and one-line errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradleak.defenses import (
    DEFENSES,
    DPSGD,
    Defense,
    GaussianNoise,
    HalfPrecision,
    Int8Quantization,
    LaplacianNoise,
    Prune,
    defense_help,
    parse_defense,
    parse_defenses,
    split_dpsgd,
)
from gradleak.errors import GradleakError


def test_registry_lists_every_kind_in_order():
    assert DEFENSES.names() == ["gaussian", "laplacian", "prune", "fp16", "int8", "dpsgd", "opacus"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gaussian:1e-3", GaussianNoise(1e-3)),
        ("laplacian:1e-2", LaplacianNoise(1e-2)),
        ("prune:0.3", Prune(0.3)),
        ("fp16", HalfPrecision()),
        ("int8", Int8Quantization()),
        ("dpsgd:clip=1.0,sigma=0.5", DPSGD(clip=1.0, sigma=0.5)),
        ("dpsgd:clip=2,sigma=0,delta=1e-6", DPSGD(clip=2.0, sigma=0.0, delta=1e-6)),
        (" Gaussian:0.1 ", GaussianNoise(0.1)),
        ("dpsgd: sigma=1 , clip=3", DPSGD(clip=3.0, sigma=1.0)),
    ],
)
def test_parse_builds_the_defense(spec, expected):
    defense = parse_defense(spec)
    assert defense == expected
    assert isinstance(defense, Defense)


def test_canonical_names():
    assert parse_defense("gaussian:1e-3").name == "gaussian:0.001"
    assert parse_defense("laplacian:1e-2").name == "laplacian:0.01"
    assert parse_defense("prune:0.3").name == "prune:0.3"
    assert parse_defense("fp16").name == "fp16"
    assert parse_defense("int8").name == "int8"
    assert parse_defense("dpsgd:clip=1,sigma=0.5").name == "dpsgd:clip=1.0,sigma=0.5,delta=1e-05"


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_registered_example_parses_and_round_trips(name):
    kind = DEFENSES.get(name)
    defense = parse_defense(kind.example)
    assert parse_defense(defense.name) == defense
    assert defense.name.split(":")[0] == name


@given(
    kind=st.sampled_from(["gaussian", "laplacian"]),
    value=st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
)
def test_noise_names_round_trip_exactly(kind, value):
    defense = parse_defense(f"{kind}:{value!r}")
    assert parse_defense(defense.name) == defense


@given(ratio=st.floats(min_value=0, max_value=1))
def test_prune_names_round_trip_exactly(ratio):
    defense = parse_defense(f"prune:{ratio!r}")
    assert defense == Prune(ratio)
    assert parse_defense(defense.name) == defense


@pytest.mark.parametrize(
    ("spec", "reason", "form"),
    [
        ("gaussian", "missing the variance", "gaussian:VARIANCE"),
        ("gaussian:", "missing the variance", "gaussian:VARIANCE"),
        ("prune:1.5", "ratio must be in [0, 1]", "prune:RATIO"),
        ("prune:-0.1", "ratio must be in [0, 1]", "prune:RATIO"),
        ("gaussian:-1", "variance must be >= 0", "gaussian:VARIANCE"),
        ("gaussian:nan", "must be finite", "gaussian:VARIANCE"),
        ("laplacian:inf", "must be finite", "laplacian:SCALE"),
        ("laplacian:abc", "is not a number", "laplacian:SCALE"),
        ("fp16:1", "takes no value", "fp16"),
        ("int8:8", "takes no value", "int8"),
        ("dpsgd", "missing clip and sigma", "dpsgd:clip=C,sigma=S[,delta=D]"),
        ("dpsgd:clip=1", "missing sigma", "dpsgd:clip=C,sigma=S[,delta=D]"),
        ("dpsgd:clip=0,sigma=1", "clip must be > 0", "dpsgd:clip=C,sigma=S[,delta=D]"),
        ("dpsgd:clip=1,sigma=-1", "sigma must be >= 0", "dpsgd:clip=C,sigma=S[,delta=D]"),
        ("dpsgd:clip=1,sigma=1,delta=1", "delta must be in (0, 1)", "dpsgd:clip"),
        ("dpsgd:clip=1,sigma=1,eps=3", "unknown key 'eps'", "dpsgd:clip"),
        ("dpsgd:clip=1,clip=2,sigma=1", "clip given twice", "dpsgd:clip"),
        ("dpsgd:1,1", "is not key=value", "dpsgd:clip"),
    ],
)
def test_bad_spec_is_one_line_naming_spec_form_and_kinds(spec, reason, form):
    with pytest.raises(GradleakError) as info:
        parse_defense(spec)
    message = str(info.value)
    assert "\n" not in message
    assert repr(spec) in message
    assert reason in message
    assert f"expected {form}" in message
    for name in DEFENSES.names():
        assert name in message


def test_unknown_kind_names_spec_and_choices():
    with pytest.raises(GradleakError) as info:
        parse_defense("foo:1")
    message = str(info.value)
    assert "'foo:1'" in message and "unknown kind 'foo'" in message
    assert "choose one of gaussian, laplacian, prune, fp16, int8, dpsgd" in message
    assert "gaussian:VARIANCE" in message and "\n" not in message


def test_parse_defenses_keeps_order_and_allows_repeats():
    defenses = parse_defenses(["gaussian:1e-3", "prune:0.3", "gaussian:1e-3", "int8"])
    assert [d.name for d in defenses] == ["gaussian:0.001", "prune:0.3", "gaussian:0.001", "int8"]
    assert parse_defenses([]) == []
    assert parse_defenses("fp16") == [HalfPrecision()]  # a lone string is one spec


def test_parse_defenses_refuses_two_dpsgd():
    with pytest.raises(GradleakError, match="at most one dpsgd"):
        parse_defenses(["dpsgd:clip=1,sigma=1", "dpsgd:clip=2,sigma=1"])


def test_split_dpsgd_separates_it_and_keeps_order():
    defenses = parse_defenses(["prune:0.1", "dpsgd:clip=1,sigma=1", "fp16"])
    dp, rest = split_dpsgd(defenses)
    assert dp == DPSGD(clip=1.0, sigma=1.0)
    assert rest == [Prune(0.1), HalfPrecision()]
    assert split_dpsgd([HalfPrecision()]) == (None, [HalfPrecision()])


def test_help_documents_every_kind_and_the_meaning_of_the_numbers():
    text = defense_help()
    assert "\n" not in text
    for name in DEFENSES.names():
        assert DEFENSES.get(name).form in text
    assert "variance" in text and "scale b" in text
