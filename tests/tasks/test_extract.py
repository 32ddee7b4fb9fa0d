"""Unit tests of the pure extraction functions (openrft.tasks.extract, and extract_letter in openrft.tasks.mcq)."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from openrft.tasks.extract import (
    clean_latex,
    extract_number,
    extract_text,
    find_boxed,
    format_number,
    last_boxed,
    normalize_text,
    numbers_close,
    parse_number,
    texts_match,
)
from openrft.tasks.mcq import extract_letter, match_option
from openrft.tasks.prompts import render_options, render_reply

MOLES = ["3 moles", "6 moles", "9 moles", "12 moles"]
WORK = ["-3.2 L atm", "-4.8 L atm", "+14.4 L atm", "-9.62 L atm"]
HEAT = ["A reaction that releases heat", "A reaction that absorbs heat", "Both of the above", "Neither of the above"]


# ---- boxes and LaTeX ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "content"),
    [
        (r"\boxed{B}", "B"),
        (r"$\boxed{\text{B}}$", r"\text{B}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
        (r"\boxed{A} then \fbox{C}", "C"),
        (r"\boxed { 7 }", "7"),
        (r"e.g. \boxed{A}", None),
        (r"for example, $\boxed{A}$", None),
        (r"\boxed{}", None),
        (r"\boxed{unclosed", None),
        ("no box", None),
    ],
)
def test_last_boxed(text: str, content: str | None) -> None:
    assert last_boxed(text) == content


def test_find_boxed_positions_are_ordered() -> None:
    text = r"\boxed{1} and \boxed{2} and \boxed{3}"
    boxes = find_boxed(text)
    assert [b.content for b in boxes] == ["1", "2", "3"]
    assert [b.pos for b in boxes] == sorted(b.pos for b in boxes)
    assert [b.joined for b in boxes] == [False, True, True]
    assert [b.joined for b in find_boxed(r"\boxed{1}. Check: \boxed{1}")] == [False, False]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (r"\textbf{\text{B}}", "B"),
        (r"\mathrm{C}", "C"),
        (r"\dfrac{3}{4}", "3/4"),
        (r"\tfrac{-1}{2}", "-1/2"),
        (r"\$18", "$18"),
        (r"50\%", "50%"),
        (r"1{,}234", "1,234"),
        (r"1\,000", "1,000"),
    ],
)
def test_clean_latex(raw: str, clean: str) -> None:
    assert clean_latex(raw) == clean


# ---- numbers --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("s", "value"),
    [
        ("18", Fraction(18)),
        ("18.00", Fraction(18)),
        ("$18", Fraction(18)),
        (r"\$18", Fraction(18)),
        ("-$18", Fraction(-18)),
        ("$-18", Fraction(-18)),
        ("18 dollars", Fraction(18)),
        ("1,234.5", Fraction(2469, 2)),
        ("1,450,000", Fraction(1450000)),
        ("-3", Fraction(-3)),
        ("−3", Fraction(-3)),
        ("3/4", Fraction(3, 4)),
        (r"\frac{3}{4}", Fraction(3, 4)),
        (r"-\frac{3}{4}", Fraction(-3, 4)),
        ("1.5e3", Fraction(1500)),
        ("2E-2", Fraction(1, 50)),
        (r"1.8 \times 10^{-5}", Fraction(18, 10**6)),
        ("1.8x10^-5", Fraction(18, 10**6)),
        ("50%", Fraction(50)),
        (".5", Fraction(1, 2)),
        ("x = 7", Fraction(7)),
        ("2 * 9 = 18", Fraction(18)),
        ("5 or 6", None),
        ("3, 4", None),
        ("", None),
        ("seven", None),
        ("1/0", None),
    ],
)
def test_parse_number(s: str, value: Fraction | None) -> None:
    assert parse_number(s) == value


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("18", "18.0", True),
        ("18", "18.00", True),
        ("18", "$18", True),
        ("1,234.5", "1234.50", True),
        ("0.75", "3/4", True),
        ("0.3333333", "1/3", True),
        ("1500", "1.5e3", True),
        ("1.0000001", "1", True),
        ("-0", "0", True),
        ("1450001", "1450000", False),
        ("0.33", "1/3", False),
        ("18", "-18", False),
        ("1e-12", "0", False),
        ("1.8e-15", "1.9e-15", False),
        ("abc", "1", False),
    ],
)
def test_numbers_close(a: str, b: str, same: bool) -> None:
    assert numbers_close(a, b) is same
    assert numbers_close(b, a) is same


def test_numbers_close_tolerances_are_configurable() -> None:
    assert not numbers_close("18.1", "18")
    assert numbers_close("18.1", "18", rel_tol=0.01)
    assert numbers_close("0.001", "0", abs_tol=0.01)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("#### 42", "42"),
        ("The answer is: 1,234.5", "1234.5"),
        ("The answer is: 1,234.5.", "1234.5"),
        ("She makes $18 every day.", "18"),
        ("18 dollars", "18"),
        ("The answer is -7.", "-7"),
        ("x = -7", "-7"),
        ("The answer is 3/4", "0.75"),
        (r"\boxed{\frac{3}{4}}", "0.75"),
        (r"\boxed{\dfrac{-1}{4}}", "-0.25"),
        ("The answer is 1.5e3", "1500"),
        ("The discount is 50%.", "50"),
        (r"The discount is 50\%.", "50"),
        (r"\boxed{\$18}", "18"),
        (r"\boxed{18.00}", "18"),
        (r"\boxed{18 \text{ dollars}}", "18"),
        (r"$\boxed{1{,}234}$", "1234"),
        (r"\boxed{x = 7}", "7"),
        (r"\boxed{2 \times 9 = 18}", "18"),
        ("Final Answer: The final answer is $\\frac{7}{2}$. I hope it is correct.", "3.5"),
        ("**Final answer:** 72 apples", "72"),
        ("The answer is 16. No wait: 16 - 7 = 9, so the answer is 9.", "9"),
        ("#### 5\nActually, \\boxed{6}", "6"),
        ("The answer is the eggs times the price, which is 9 * 2 = 18.", "18"),
        ("Answer:\n18", "18"),
        ("1/3 of 9 is 3", "3"),
        ("The answer is 5 or 6.", None),
        ("It could be 5 or 6", None),
        (r"\boxed{5} or \boxed{6}", None),
        (r"\boxed{5, 6}", None),
        (r"\boxed{\text{cannot be determined}}", None),
        ("How many eggs does she sell if she has 16?", None),
        ("I don't know.", None),
        ("", None),
    ],
)
def test_extract_number(text: str, number: str | None) -> None:
    assert extract_number(text) == number


def test_number_surface_forms_roundtrip() -> None:
    """Property-ish: every way of writing a number extracts to the same canonical value."""
    rng = random.Random(0)
    for _ in range(300):
        cents = rng.randint(-10**8, 10**8)
        value = Fraction(cents, 100)
        plain = f"{float(value):.2f}"
        sign, digits = ("-", plain[1:]) if plain.startswith("-") else ("", plain)
        whole, frac = digits.split(".")
        grouped = f"{int(whole):,}.{frac}"
        forms = [
            plain,
            f"{sign}${digits}",
            f"{sign}{grouped}",
            rf"\boxed{{{sign}\${grouped}}}",
            f"The answer is: {sign}{grouped}.",
            f"#### {sign}{grouped}",
            f"So the total is {sign}{digits} dollars",
        ]
        for form in forms:
            got = extract_number(form)
            assert got is not None and Fraction(got) == value, (form, got)
            assert numbers_close(got, plain)


@pytest.mark.parametrize("x", [Fraction(18), Fraction(-3, 4), Fraction(1, 3), Fraction(18, 10**6), Fraction(10**20)])
def test_format_number_parses_back(x: Fraction) -> None:
    assert numbers_close(format_number(x), x)
    assert parse_number(format_number(x)) is not None


# ---- letters --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "letter"),
    [
        # boxed forms
        (r"\boxed{B}", "B"),
        (r"\boxed{\text{B}}", "B"),
        (r"\boxed{(B)}", "B"),
        (r"\boxed{B. 6}", "B"),
        (r"\boxed{B) 6 moles}", "B"),
        (r"\boxed{\textbf{B}}", "B"),
        (r"$\boxed{\text{(B) } 6 \text{ moles}}$", "B"),
        (r"\boxed{b}", "B"),
        (r"\boxed{Option C}", "C"),
        (r"\boxed{6 \text{ moles}}", "B"),
        # answer phrases
        ("The correct answer is: B", "B"),
        ("Answer: (b)", "B"),
        ("the answer is option C", "C"),
        ("**Answer:** C", "C"),
        ("### Final Answer: D", "D"),
        ("The final answer is $\\boxed{C}$.", "C"),
        ("so the answer is c", "C"),
        ("Answer: c.", "C"),
        ("The answer is (A) 3 moles", "A"),
        ("Answer: A. 3 moles", "A"),
        ("The answer is A because 3 is the smallest.", "A"),
        ("The correct option is (D).", "D"),
        ("Correct answer: C) 9 moles", "C"),
        ("The answer is therefore B.", "B"),
        ("The answer would be D", "D"),
        ("The answer is:\nC. 9 moles", "C"),
        ("The answer is 6 moles.", "B"),
        ("Option D is correct.", "D"),
        ("I think B is the correct answer.", "B"),
        ("(c) is right", "C"),
        ("B is incorrect, C is correct.", "C"),
        ("I choose C.", "C"),
        ("I'd go with B.", "B"),
        ("Let's go with option A.", "A"),
        ("The answer is not A; the answer is D.", "D"),
        ("The answer is a bit tricky, so \\boxed{D}", "D"),
        ("CO2 and H2O form, so the answer is C.", "C"),
        # last answer wins
        ("The answer is B. Wait, actually the correct answer is D.", "D"),
        (r"\boxed{A} ... I made an error, so \boxed{C}", "C"),
        ("The answer is C.\n\\boxed{B}", "B"),
        # bare final lines
        ("B", "B"),
        ("b", "B"),
        ("B.", "B"),
        ("(B)", "B"),
        ("  [B]  \n", "B"),
        ("Option B", "B"),
        ("So, B.", "B"),
        ("B) 6 moles", "B"),
        ("B. 6 moles", "B"),
        ("6 moles", "B"),
        ("  6 MOLES. ", "B"),
        ("A. 3 moles\nB. 6 moles\nC. 9 moles\nD. 12 moles\n\nB", "B"),
        ("A. 3 moles\nB. 6 moles\nC. 9 moles\nD. 12 moles\nThe answer is C", "C"),
        ('Your answer should be "A", "B", "C" or "D".\nB', "B"),
        ("B. 6 moles\n\nBecause 2 * 3 = 6.\n\nB. 6 moles", "B"),
        ("B. 6 moles\n\nEach mole of propane gives three moles of CO2.", "B"),  # answer first
        ("Answer: B\n\nA. 3 moles\nB. 6 moles\nC. 9 moles\nD. 12 moles", "B"),
        ("The correct answer is:\nC. 9 moles\nExplanation: 3 per mole.", "C"),
        # reasoning-model phrasing
        ("Option A: 3 moles. This is incorrect. Option B: 6 moles. This is correct. Therefore, the answer is B.", "B"),
        ("Option B is not correct. Option C is correct.", "C"),
        ("A) is wrong. B) is right.", "B"),
        ("The answer is: **(C) 9 moles**", "C"),
        ("Therefore, the correct choice is \\(\\boxed{C}\\).", "C"),
        ("Final answer: C", "C"),
        ("So the answer should be D, not A.", "D"),
        ("The answer is B and not C", "B"),
        ("Between A and B, B is correct.", "B"),
        ("Comparing (A) and (C): (C) is correct", "C"),
        ("I'm not sure, but I think it's B.", "B"),
        ("The answer is B, B.", "B"),
    ],
)
def test_extract_letter(text: str, letter: str) -> None:
    assert extract_letter(text, MOLES) == letter


@pytest.mark.parametrize(
    "text",
    [
        # echoed option lists and restated questions
        "A. 3 moles\nB. 6 moles\nC. 9 moles\nD. 12 moles",
        "A) 3 moles\n\nB) 6 moles\n\nC) 9 moles\n\nD) 12 moles",
        "(A) 3 moles (B) 6 moles",
        "How many moles of CO2 form from 2 moles of propane?\nA. 3 moles\nB. 6 moles\nC. 9 moles\nD. 12 moles",
        "How many moles of CO2 form from 2 moles of propane?",
        "A. 3 moles\nB. 6 moles\nC. 9 moles\nD. 12 moles\nA. 3 moles\nB. 6 moles",
        "A. 3 moles\nB. 6 moles\nC. 9 moles\nD. 12 moles\nA. 3 moles",
        "3 moles\n6 moles\n9 moles\n12 moles",
        "The correct answer is:\nA. 3 moles\nB. 6 moles\nC. 9 moles\nD. 12 moles",
        "The answer is A. 3 moles\nB. 6 moles",
        "A\nB\nC\nD",
        "A. 6 moles",
        # hedges
        "The answer is A or B.",
        "It is either B or C.",
        "Both A and C are correct.",
        "B or C is correct.",
        "The answer is B, C",
        "The answer is B/C",
        "Answer: (B) or (C)",
        r"\boxed{A, C}",
        r"\boxed{B \text{ and } D}",
        r"\boxed{A} or \boxed{B}",
        "A or B",
        "B, C",
        "The answer is B. Hmm, or maybe it is A or C.",
        "The answer is C.\nD",
        "I think it is A reaction.",
        "A. 3 moles\n\nStep 1: list the options.\nA. 3 moles\nB. 6 moles",
        "A) A gas in a 2.0-liter container expands against 0.80 atm.",
        # articles, pronouns, words, units, formulas
        "A reaction occurs.",
        "The answer is a bit tricky.",
        "I think so.",
        "The speed is 4 m",
        "C3H8",
        "Molar masses:\nH: 1.008 g/mol\nC: 12.01 g/mol",
        "CO2",
        "Vitamin C.\nThe answer is clear.",
        "The answer is E.",
        # instructions echoed back
        r"Think step by step, then give your final answer as the option letter in \boxed{}, e.g. \boxed{A}.",
        'Your answer should be "A", "B", "C" or "D". Please directly give the answer without any explanation.',
        "Answer:",
        "",
    ],
)
def test_extract_letter_no_answer(text: str) -> None:
    assert extract_letter(text, MOLES) is None


def test_article_a_is_not_a_letter_when_options_start_with_a() -> None:
    assert extract_letter("A reaction that releases heat is exothermic.", HEAT) is None
    assert extract_letter("A reaction that releases heat", HEAT) == "A"  # the option text itself
    assert extract_letter("The answer is A reaction that absorbs heat", HEAT) == "B"


def test_labels_limit_letters() -> None:
    assert extract_letter("The answer is E.", labels="ABCDE") == "E"
    assert extract_letter("The answer is E.", labels="ABCD") is None
    assert extract_letter("I think the answer is I.", labels="ABCDEFGHIJ") == "I"
    assert extract_letter("The answer is C.") == "C"  # default labels A-D


def test_match_option_needs_a_unique_exact_match() -> None:
    assert match_option("-3.2 L ATM", WORK) == "A"
    assert match_option("3.2 L atm", WORK) is None
    assert match_option("6", ["6", "6", "7"]) is None
    assert match_option("", WORK) is None
    assert match_option("6 moles", None) is None


def test_echoed_lists_never_yield_a_letter() -> None:
    """Property-ish: any echo of any subset (2+) of the options, in any label style, is no answer."""
    rng = random.Random(1)
    styles = ["{l}. {t}", "{l}) {t}", "({l}) {t}", "{l}: {t}", "{t}"]
    for _ in range(300):
        choices = rng.sample(MOLES + WORK + HEAT, 4)
        k = rng.randint(2, 4)
        start = rng.randint(0, 4 - k)
        style = rng.choice(styles)
        sep = rng.choice(["\n", "\n\n"])
        lines = [style.format(l="ABCD"[i], t=choices[i]) for i in range(start, start + k)]
        text = rng.choice(["", "Which is right?\n"]) + sep.join(lines)
        assert extract_letter(text, choices) is None, text


def test_rendered_replies_and_options_roundtrip() -> None:
    """The reference reply of every letter extracts to that letter; the rendered option list to nothing."""
    for letter in "ABCD":
        assert extract_letter(render_reply(letter, "Some reasoning about option A."), MOLES) == letter
    assert extract_letter(render_options(MOLES), MOLES) is None


# ---- text ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [("The Nile", "nile"), ("  Paris. ", "paris"), ("an apple", "Apple!"), ("New   York", "new york")],
)
def test_normalize_text_equal(a: str, b: str) -> None:
    assert normalize_text(a) == normalize_text(b)
    assert texts_match(a, b)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (r"\boxed{\text{Paris}}", "Paris"),
        ("The answer is: **Paris**.", "Paris"),
        ("Reasoning...\nParis", "Paris"),
        ('Answer: "Paris"', "Paris"),
        ("", None),
    ],
)
def test_extract_text(text: str, answer: str | None) -> None:
    assert extract_text(text) == answer


@pytest.mark.parametrize(
    "text",
    [
        " " * 20000 + "x",  # was quadratic: a letter pattern allowing spaces before the letter
        "\\boxed{" * 3000,  # was quadratic: brace matching per unclosed box
        "\\text{" * 2000 + "B" + "}" * 2000,  # nested macros
        "1" * 50000,  # huge integer
        "The answer is 1e999999999",  # huge exponent
        "answer is " * 2000,
        ("A. x\n" * 5 + "text\n") * 500,
    ],
    ids=["spaces", "boxes", "nested-text", "digits", "exponent", "heads", "lines"],
)
def test_pathological_inputs_are_fast(text: str) -> None:
    import time

    for extract in (lambda t: extract_letter(t, MOLES), extract_number, extract_text):
        start = time.perf_counter()
        extract(text)
        assert time.perf_counter() - start < 3.0
