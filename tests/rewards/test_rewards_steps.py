import pytest

from openrft.rewards.steps import split_steps, step_rule


def test_newline_spans_point_into_text():
    text = "  First we add 2 and 3.\n\nThat gives 5.  \nThe answer is 5."
    steps = split_steps(text, "newline")
    assert [s.text for s in steps] == ["First we add 2 and 3.", "That gives 5.", "The answer is 5."]
    for s in steps:
        assert text[s.start:s.end] == s.text


def test_blank_line_keeps_multiline_steps():
    text = "a\nb\n\n  \nc"
    assert [s.text for s in split_steps(text, "blank_line")] == ["a\nb", "c"]


def test_step_k_keeps_preamble_and_markers():
    text = "Let's solve it.\nStep 1: 2+3=5.\n**Step 2:** so x=5\nstep 3) done"
    steps = split_steps(text, "step_k")
    assert [s.text for s in steps] == ["Let's solve it.", "Step 1: 2+3=5.", "**Step 2:** so x=5", "step 3) done"]
    for s in steps:
        assert text[s.start:s.end] == s.text


def test_regex_rule_and_empty_text():
    assert [s.text for s in split_steps("a; b ;c", "re:;")] == ["a", "b", "c"]
    assert split_steps("", "newline") == []
    assert split_steps(" \n \n", "blank_line") == []


def test_bad_rules_are_named():
    with pytest.raises(ValueError, match="unknown step rule 'lines'"):
        step_rule("lines")
    with pytest.raises(ValueError, match="invalid regular expression"):
        step_rule("re:(")
