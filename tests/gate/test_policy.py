"""Gate policy parsing: thresholds with their arithmetic, every rule form, and one clear error line
(naming the file and the fix) for each way a policy can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_eval.errors import UserInputError
from rlhf_eval.gate.policy import POLICY_KEYS, RULE_KEYS, load_policy, parse_policy, parse_threshold

DEFAULT = Path(__file__).resolve().parents[2] / "suites" / "gates" / "default.yaml"


@pytest.mark.parametrize(
    ("text", "anchor", "expected"),
    [
        (10, None, 10.0),
        ("2.5", None, 2.5),
        ("1e-2", None, 0.01),
        ("baseline", 7.0, 7.0),
        ("reference + 20%", 10.0, 12.0),  # 10 + 0.2·|10|
        ("reference + 20%", -10.0, -8.0),  # -10 + 0.2·|-10|: "20% more" moves up for a negative anchor too
        ("baseline - 10%", 50.0, 45.0),  # 50 − 0.1·50
        ("baseline + 0.05", 0.02, 0.07),
        ("baseline - 1", 0.5, -0.5),
        ("reference * 1.5", 4.0, 6.0),
        ("  reference+3 ", 1.0, 4.0),
    ],
)
def test_threshold_arithmetic(text: object, anchor: float | None, expected: float) -> None:
    assert parse_threshold(text).resolve(anchor) == pytest.approx(expected)


def test_relative_threshold_without_anchor_value_is_refused() -> None:
    with pytest.raises(ValueError, match="needs the baseline"):
        parse_threshold("baseline + 1").resolve(None)


@pytest.mark.parametrize("text", ["baseline +", "ref + 2", "10 nats", "baseline * 20%", "nan", "", True, None])
def test_bad_thresholds(text: object) -> None:
    with pytest.raises(UserInputError, match="threshold|finite|factor"):
        parse_threshold(text, "p.yaml: rule 1: max")


def test_default_policy_parses_with_the_rules_the_product_needs() -> None:
    policy = load_policy(DEFAULT)
    assert policy.version == 1 and policy.name == "default"
    kinds = {r.name: (r.kind, r.metric, r.severity) for r in policy.rules}
    assert kinds["kl-budget"] == ("absolute", "kl", "critical")
    assert next(r for r in policy.rules if r.name == "kl-budget").statistic == "ci_high"
    assert kinds["gold-not-below-baseline"] == ("paired", "gold_reward", "critical")
    assert kinds["not-past-peak"] == ("boolean", "past_peak", "critical")
    assert kinds["proxy-gold-divergence"][1] == "proxy_gold_gap"
    for name, metric in [
        ("length-inflation", "mean_length"),
        ("seq-rep-4", "seq_rep_4"),
        ("loop-rate", "loop_rate"),
        ("hedge-rate", "hedge_rate"),
    ]:
        rule = next(r for r in policy.rules if r.name == name)
        assert (rule.metric, rule.kind, rule.threshold.anchor) == (metric, "relative", "reference")  # type: ignore[union-attr]


def test_rule_forms() -> None:
    policy = parse_policy(
        {
            "version": 1,
            "rules": [
                {"name": "a", "metric": "kl", "max": 3},
                {"name": "b", "metric": "gold_reward", "min": "baseline - 5%", "severity": "warning"},
                {"name": "c", "metric": "overoptimized", "equals": False},
                {"name": "d", "metric": "seq_rep_4", "test": "paired", "direction": "not_higher", "margin": 0.01},
            ],
        },
        "p.yaml",
    )
    a, b, c, d = policy.rules
    assert (a.kind, a.op, a.rule_text) == ("absolute", "<=", "kl <= 3")
    assert (b.kind, b.op, b.severity, b.rule_text) == ("relative", ">=", "warning", "gold_reward >= baseline - 5%")
    assert (c.kind, c.expected, c.rule_text) == ("boolean", False, "overoptimized == false")
    assert (d.kind, d.direction, d.margin, d.alpha) == ("paired", "not_higher", 0.01, 0.05)
    assert policy.name == "p" and policy.replicates == 2000 and policy.seed == 0


RULE = {"name": "r", "metric": "kl", "max": 1}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "a gate policy is a mapping"),
        ({"rules": [RULE]}, "missing 'version'; add 'version: 1'"),
        ({"version": 2, "rules": [RULE]}, "version 2 is not supported"),
        ({"version": 1, "rules": []}, "'rules' must be a non-empty list"),
        ({"version": 1, "rule": [RULE]}, "unknown key 'rule'.* Did you mean 'rules'"),
        ({"version": 1, "rules": [{"name": "r", "metric": "kl", "maxx": 1}]}, "unknown key 'maxx'.*Did you mean 'max'"),
        ({"version": 1, "rules": [{"name": "r", "metric": "kl", "max": 1, "min": 0}]}, "exactly one of max, min"),
        ({"version": 1, "rules": [{"name": "r", "metric": "kl"}]}, r"exactly one of .*\(found none\)"),
        ({"version": 1, "rules": [{"metric": "kl", "max": 1}]}, "missing 'name'"),
        ({"version": 1, "rules": [{"name": "r", "max": 1}]}, "missing 'metric'"),
        ({"version": 1, "rules": [{**RULE, "severity": "fatal"}]}, "severity 'fatal': use critical or warning"),
        ({"version": 1, "rules": [{**RULE, "statistic": "p95"}]}, "statistic 'p95'"),
        ({"version": 1, "rules": [{"name": "r", "metric": "x", "equals": "no"}]}, "use true or false"),
        ({"version": 1, "rules": [{"name": "r", "metric": "x", "test": "ttest"}]}, "the only test is 'paired'"),
        ({"version": 1, "rules": [{"name": "r", "metric": "x", "test": "paired", "alpha": 0.7}]}, "alpha 0.7"),
        ({"version": 1, "rules": [{"name": "r", "metric": "x", "test": "paired", "margin": -1}]}, "margin -1"),
        ({"version": 1, "rules": [{"name": "r", "metric": "x", "test": "paired", "direction": "up"}]}, "direction"),
        ({"version": 1, "rules": [{**RULE, "alpha": 0.1}]}, "alpha only apply to other rule forms"),
        ({"version": 1, "rules": [RULE, RULE]}, "rule names must be unique; r appear"),
        ({"version": 1, "rules": [RULE], "bootstrap": {"replicates": 5}}, "replicates 5"),
        ({"version": 1, "rules": ["kl <= 1"]}, "a rule is a mapping"),
    ],
)
def test_policy_errors_name_the_file_and_the_fix(data: object, message: str) -> None:
    with pytest.raises(UserInputError, match=message) as info:
        parse_policy(data, "gates/p.yaml")
    text = str(info.value)
    assert text.startswith("gates/p.yaml") and "\n" not in text


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"--policy .*missing.yaml: no such file"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - name: [unclosed\n")
    with pytest.raises(UserInputError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_policy(bad)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"version: 1\n\xff\xfe rules")
    with pytest.raises(UserInputError, match="not UTF-8"):
        load_policy(binary)


HEAD = "version: 1\nrules:\n  - {name: r, metric: kl, "


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (HEAD + f"max: {'9' * 400}}}\n", "a number of 1329 bits is beyond any float; write a smaller number"),
        (HEAD + f"test: paired, margin: {2**1100}}}\n", "a number of 1101 bits is beyond any float"),
        ("version: 0x" + "f" * 3600 + "\n", "a number of 14400 bits"),
        ("version: 1\nname: 2001-13-45\n", r"not valid YAML \(month must be in 1..12\); fix the value it names"),
        ("version: !!int abc\n", r"not valid YAML \(invalid literal for int\(\)"),
        ("[" * 500, r"not valid YAML \(nested too deeply\)"),
        (HEAD + 'max: 1, description: "\\ud800"}\n', r"\\ud800 is a lone surrogate, not Unicode text"),
        ('version: 1\nrules:\n  - {name: "a\\nb", metric: kl, max: 1}\n  - {name: "a\\nb", metric: kl, max: 2}\n',
         "rule names must be unique; a b appear more than once"),
    ],
)  # fmt: skip
def test_yaml_that_raised_other_exceptions(tmp_path: Path, body: str, message: str) -> None:
    """Found with tests/test_fuzz_loaders.py: these raised OverflowError, ValueError or
    RecursionError, or (two rules named "a\\nb") gave a message of two lines."""
    path = tmp_path / "p.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(UserInputError, match=message) as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}: ") and len(str(info.value).splitlines()) == 1


# -- fuzzing: whatever YAML a user writes, the parser answers with a policy or one domain error --

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["baseline", "reference + 20%", "baseline - 1", "reference * 2", "1e-2", "paired", "value",
                     "ci_low", "ci_high", "critical", "warning", "kl", "gold_reward", "past_peak", "not_lower"]),
)  # fmt: skip
KEYS = st.sampled_from([*POLICY_KEYS, *RULE_KEYS, "replicates", "seed", "x"])
YAMLISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=6)),
    max_leaves=25,
)
THRESHOLD = st.one_of(
    st.floats(-100, 100), st.integers(-100, 100),
    st.builds("{} {} {}{}".format, st.sampled_from(["baseline", "reference"]), st.sampled_from(["+", "-", "*"]),
              st.floats(0, 50).map(lambda x: round(x, 3)), st.sampled_from(["", "%"])),
)  # fmt: skip
LIMIT_RULE = st.builds(
    lambda base, bound, threshold: {**base, bound: threshold},
    st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=8), "metric": st.sampled_from(["kl", "gold_reward", "mean_length", "x"])},
        optional={"severity": st.sampled_from(["critical", "warning", "fatal"]),
                  "statistic": st.sampled_from(["value", "ci_low", "ci_high", "median"])},
    ),
    st.sampled_from(["max", "min"]),
    THRESHOLD,
)  # fmt: skip
PAIRED_RULE = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=8), "metric": st.sampled_from(["gold_reward", "proxy_reward"]),
     "test": st.sampled_from(["paired", "unpaired"]), "direction": st.sampled_from(["not_lower", "not_higher", "up"])},
    optional={"margin": st.one_of(st.floats(-1, 1), SCALARS), "alpha": st.one_of(st.floats(0, 1), SCALARS)},
)  # fmt: skip
EQUALS_RULE = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=8),
        "metric": st.just("past_peak"),
        "equals": st.one_of(st.booleans(), SCALARS),
    }
)


@st.composite
def mutated(draw: st.DrawFn, rule: st.SearchStrategy[dict[str, object]]) -> dict[str, object]:
    """A well-formed rule, with one field sometimes replaced by anything YAML can hold."""
    item = dict(draw(rule))
    if draw(st.booleans()):
        item[draw(KEYS)] = draw(YAMLISH)
    return item


RULE = st.one_of(mutated(LIMIT_RULE), mutated(PAIRED_RULE), mutated(EQUALS_RULE), st.dictionaries(KEYS, YAMLISH))
POLICY = st.fixed_dictionaries(
    {"version": st.one_of(st.just(1), st.just(1), SCALARS), "rules": st.one_of(st.lists(RULE, min_size=1, max_size=4),
                                                                              YAMLISH)},
    optional={"name": SCALARS, "description": SCALARS,
              "bootstrap": st.one_of(st.fixed_dictionaries({}, optional={"replicates": SCALARS, "seed": SCALARS}),
                                     YAMLISH)},
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(st.one_of(POLICY, YAMLISH))
def test_any_parsed_yaml_gives_a_policy_or_one_error_line_naming_the_file(data: object) -> None:
    try:
        policy = parse_policy(data, "p.yaml")
    except UserInputError as exc:
        message = str(exc)
        assert message.startswith("p.yaml") and "\n" not in message, message
    else:
        assert policy.rules and len({r.name for r in policy.rules}) == len(policy.rules)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8")))
def test_any_file_content_gives_a_policy_or_one_error_line(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "p.yaml"
    path.write_bytes(raw)
    try:
        load_policy(path)
    except UserInputError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc), str(exc)
