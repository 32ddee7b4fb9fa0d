"""Parsing rewriter replies: separators and their variations, lists, labels, quotes, preambles, junk."""

from __future__ import annotations

import pytest

from openrft.augment.rewrite import SEP, parse_variants, rewrite_messages

Q = "What is the molar mass of H2O in g/mol?"
A, B, C = "Find the molar mass of H2O in g/mol.", "In g/mol, what is the molar mass of H2O?", \
    "Determine, in g/mol, the molar mass of H2O."


@pytest.mark.parametrize("reply", [
    f"{A}<sep>{B}<sep>{C}",
    f"{A} <sep> {B} <sep> {C}",
    f"{A}\n<sep>\n{B}\n<sep>\n{C}\n<sep>",
    f"<sep>{A}<sep>{B}<sep>{C}<sep>",
    f"{A}< sep >{B}<SEP>{C}",
    f"{A}[SEP]{B}[sep]{C}",
    f"{A}[ SEP ]{B}</sep>{C}",
    f"{A}<sep/>{B}<|sep|>{C}",
    f"{A}\\<sep\\>{B}&lt;sep&gt;{C}",
    f"{A}\nSEP\n{B}\nsep\n{C}",
    f"{A}<sep><sep>{B}<sep>   <sep>{C}",
    f"Here are 3 rewritten versions:\n\n{A}\n<sep>\n{B}\n<sep>\n{C}",
    f"Sure! Here are the versions of the question:\n{A} <sep> {B} <sep> {C}\n\nI hope this helps!",
    f"Variant 1: {A}\n<sep>\nVariant 2: {B}\n<sep>\nVariant 3: {C}",
    f"**Version 1:** {A} <sep> **Version 2:** {B} <sep> **Version 3:** {C}",
    f'"{A}" <sep> "{B}" <sep> "{C}"',
    f"“{A}” <sep> ‘{B}’ <sep> `{C}`",
    f"1. {A}\n2. {B}\n3. {C}",
    f"1) {A}\n2) {B}\n3) {C}",
    f"(1) {A}\n(2) {B}\n(3) {C}",
    f"Here are three versions:\n1. {A}\n2. {B}\n3. {C}\nLet me know if you need more.",
    f"- {A}\n- {B}\n- {C}",
    f"* {A}\n* {B}\n* {C}",
    f"• {A}\n• {B}\n• {C}",
    f"Rewrite 1: {A}\nRewrite 2: {B}\nRewrite 3: {C}",
    f"Question 1: {A}\n\nQuestion 2: {B}\n\nQuestion 3: {C}",
    f"**Variant 1:**\n{A}\n\n**Variant 2:**\n{B}\n\n**Variant 3:**\n{C}",
    f"1. \"{A}\"\n2. \"{B}\"\n3. \"{C}\"",
    f"```\n{A}\n<sep>\n{B}\n<sep>\n{C}\n```",
    f"<think>The user wants 3 versions. Let me try.</think>{A}<sep>{B}<sep>{C}",
    f"{A}\n---\n{B}\n---\n{C}",
    f"{A}\n\n{B}\n\n{C}",
    f"   {A}  <sep>\t{B}\t<sep>  {C}   \n\n",
])
def test_three_variants_in_many_shapes(reply):
    assert parse_variants(reply, Q) == [A, B, C]


def test_fewer_and_more_variants_than_asked_are_all_returned():
    assert parse_variants(A, Q) == [A]
    assert parse_variants(f"{A}<sep>{B}", Q) == [A, B]
    many = "<sep>".join(f"Variant {i}: What is item {i}?" for i in range(1, 9))
    assert len(parse_variants(many, Q)) == 8


def test_empty_junk_and_label_only_pieces():
    assert parse_variants("", Q) == []
    assert parse_variants("   \n\n  ", Q) == []
    assert parse_variants("<sep><sep>", Q) == []
    assert parse_variants("<think>still thinking about it and never stop", Q) == []
    assert parse_variants("```\n```", Q) == []
    # a label with nothing after it is returned as "" so that validation can name it 'empty'
    assert parse_variants(f"Variant 1: {A}<sep>Variant 2:<sep>{B}", Q) == [A, "", B]


def test_multiline_variants_and_data_blocks_stay_whole():
    original = "Given data:\n\nFe in Al: -0.14 eV\nFe in As: -0.21 eV\n\nWhich has the highest diffusion rate?"
    v1 = "Using the data below:\n\nFe in Al: -0.14 eV\nFe in As: -0.21 eV\n\nwhich combination diffuses fastest?"
    v2 = "Which combination diffuses fastest, given:\n\nFe in Al: -0.14 eV\nFe in As: -0.21 eV"
    assert parse_variants(f"{v1}\n<sep>\n{v2}", original) == [v1, v2]
    # the original has blank lines, so a reply without markers is one variant, not split on blank lines
    assert parse_variants(v1, original) == [v1]


def test_quotes_inside_a_variant_are_kept():
    v = "How many rings does the molecule 'C1CCCCC1' have?"
    assert parse_variants(f"{v}<sep>'Count the rings in C1CCCCC1.'", v) == [v, "Count the rings in C1CCCCC1."]
    assert parse_variants(f"'C1CCCCC1' has how many rings?<sep>{v}", v)[0] == "'C1CCCCC1' has how many rings?"


def test_numbers_inside_variants_are_not_list_markers():
    v1 = "2.10 m is the bar height; what was his vertical speed?"
    v2 = "3. What speed did he need to clear 2.10 m?"
    assert parse_variants(f"{v1}\n{v2}", None) == [f"{v1}\n{v2}"]  # not a 1., 2., ... list
    assert parse_variants(f"1. {v1}\n2. {v2[3:]}", None) == [v1, v2[3:]]


def test_prompt_names_k_and_separator_and_lists_existing_on_retry():
    msg = rewrite_messages(Q, 4, prompt="strict")[0]["content"]
    assert "4 different versions" in msg and SEP in msg and msg.endswith(f"Question:\n{Q}")
    retry = rewrite_messages(Q, 2, existing=[A])[0]["content"]
    assert "2 new ones" in retry and A in retry
    with pytest.raises(ValueError, match="unknown rewrite prompt 'fig2'; valid: paper, strict"):
        rewrite_messages(Q, 2, prompt="fig2")


def test_the_paper_prompt_is_openrft_fig2s_instruction():
    """The paragraph (the question) in 5 different expressions, meaning unchanged, separated by <sep>; and no more."""
    msg = rewrite_messages(Q, 5)[0]["content"]
    assert msg.startswith("Rewrite the following paragraph into 5 different expressions, keeping its meaning "
                          "unchanged.") and f"separated by {SEP}" in msg and msg.endswith(f"Paragraph:\n{Q}")
    assert "number" not in msg and "answer" not in msg  # the strict prompt's extra conditions are not the paper's
    assert "into 1 different expression," in rewrite_messages(Q, 1)[0]["content"]  # a re-ask for the last one
    assert "Question:" in rewrite_messages(Q, 1, single=True)[0]["content"]  # single mode has its own instruction


@pytest.mark.parametrize("reply", [
    "Find x. <sep> Give the value of x. <sep> Determine x.",
    "<sep>\nFind x.\n<sep>\nGive the value of x.\n<sep>\nDetermine x.\n<sep>",
    "Here are 3 different expressions of the paragraph:\nExpression 1: Find x. <sep> Expression 2: Give the value "
    "of x. <sep> Expression 3: Determine x.",
    "Expression 1: Find x.\nExpression 2: Give the value of x.\nExpression 3: Determine x.",
])
def test_replies_to_the_paper_prompt(reply):
    assert parse_variants(reply, "What is x?") == ["Find x.", "Give the value of x.", "Determine x."]
    # "Expression:" without a number may be the question's own word, and stays
    assert parse_variants("Expression: 3 + 4. Evaluate it.", "Expression: 4 + 3. Evaluate it.") == \
        ["Expression: 3 + 4. Evaluate it."]


def test_replies_smollm2_gave_in_the_bench():
    q = "What is the steric number of $SF_6$?"
    v = "Is the steric number of the chemical compound $SF_6$ exactly 6?"
    reply = f"Question: {v}\n\nSentence Structure:\nQuestion: {v}\n\nOutput:"
    assert parse_variants(reply, q) == [v, v]  # heading lines ("Sentence Structure:", "Output:") are labels
    q = "If the reaction of 0.112 grams of H2 produces 0.745 grams of H2O, what is the percent yield?\nFe3O4+4H2=>3Fe"
    reply = ("Rewrite Question: If 0.112 grams of H2 is converted into FeH2, what is the percent yield?\n"
             "Rewrite Question: What is the percent yield of FeH2?")
    assert parse_variants(reply, q) == ["If 0.112 grams of H2 is converted into FeH2, what is the percent yield?",
                                        "What is the percent yield of FeH2?"]
    q = "A flask contains methane at 0.215 atm and chlorine at 50 torr. Find the total pressure in the flask."
    reply = ("Question:\nA flask contains methane and chlorine. Find the total pressure.\n\nQuestion:\n<sep>\n"
             "Find the total pressure in a flask of methane at 0.215 atm and chlorine at 50 torr.\n\nQuestion:")
    assert parse_variants(reply, q) == ["A flask contains methane and chlorine. Find the total pressure.",
                                        "Find the total pressure in a flask of methane at 0.215 atm and chlorine "
                                        "at 50 torr."]
