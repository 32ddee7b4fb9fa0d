"""Validation rules, one by one, each named in the verdict; protected tokens of real bundled questions."""

from __future__ import annotations

import pytest

from openrft.augment.rewrite import RULES, ValidationRules, similarity, validate_variant
from openrft.augment.tokens import missing_tokens, protected_tokens
from openrft.data.loaders import load_bundled

PHYS = ("A steel ball with a density of 7200 kg/m^3 moves in liquid aluminum (density 2360 kg/m^3). "
        "The friction factor is 0.2. What is the force on the ball?")
GOOD = ("The friction factor is 0.2 and a steel ball of density 7200 kg/m^3 moves through liquid aluminum "
        "whose density is 2360 kg/m^3. Find the force acting on the ball.")


def kinds(text):
    return {(t.kind, t.text) for t in protected_tokens(text)}


def test_a_faithful_rewrite_passes_every_rule():
    v = validate_variant(GOOD, PHYS)
    assert v.kept and v.reason is None and v.failed == () and v.similarity < 0.9


def test_empty():
    for text in ("", "   ", "\n", "?!", "**"):
        assert validate_variant(text, PHYS).failed == ("empty",)


def test_exact_and_near_duplicates_of_the_original():
    assert validate_variant(PHYS, PHYS).failed == ("duplicate_original",)
    v = validate_variant(PHYS.upper().replace(". ", " .  "), PHYS)
    assert v.reason == "duplicate_original" and "exact" in v.detail
    near = PHYS.replace("What is the force on the ball?", "What is the force on this ball?")
    v = validate_variant(near, PHYS)
    assert v.reason == "duplicate_original" and "similarity" in v.detail
    assert validate_variant(near, PHYS, rules=ValidationRules(similarity_threshold=0.99)).kept


def test_near_duplicate_of_an_earlier_variant():
    again = GOOD.replace("Find the force", "Find the force that is")
    assert validate_variant(again, PHYS, [GOOD]).failed == ("duplicate_variant",)
    assert validate_variant(again, PHYS, []).kept


@pytest.mark.parametrize("lossy, lost", [
    (GOOD.replace("0.2", "0.3"), "number:0.2"),
    (GOOD.replace("7200 kg/m^3", "7200 kg per cubic metre"), None),  # the unit survives elsewhere
    (GOOD.replace(" 2360 kg/m^3", " about that of water"), "number:2360"),
])
def test_lost_numbers(lossy, lost):
    v = validate_variant(lossy, PHYS)
    if lost is None:
        assert "lost_tokens" not in v.failed
    else:
        assert "lost_tokens" in v.failed and lost in v.detail


def test_lost_units_formulas_latex_smiles_sequences():
    assert "unit:eV" in validate_variant("Which has the lowest barrier, -0.14 or -0.21?",
                                         "Barriers are -0.14 eV and -0.21 eV. Which is lowest?").detail
    q = "What mass of NaCl and H2O is needed?"
    assert "lost_tokens" in validate_variant("How much salt and water is needed?", q).failed
    q = "The field is $10^{4} \\mathrm{~V} / \\mathrm{m}$; find the charge."
    assert validate_variant("Find the charge if the field is $10^{4}\\,\\mathrm{V/m}$.", q).kept
    assert validate_variant("Find the charge if the field is 10^4 V/m.", q).kept
    assert validate_variant("Find the charge if the field is $10^{5}$ V/m.", q).reason == "lost_tokens"
    q = "How many rings are in the molecule with SMILES 'C1=CC=C(C=C1)COCC2'?"
    assert validate_variant("Count the rings of the molecule whose SMILES is C1=CC=C(C=C1)COCC2.", q).kept
    v = validate_variant("Count the rings of the molecule whose SMILES is C1=CC=C(C=C1)COC2.", q)
    assert v.reason == "lost_tokens" and "identifier:C1=CC=C(C=C1)COCC2" in v.detail
    q = "The wild type 'MQYKLILNGKTLKGETTTEA' has fitness 1.0; what is the mutant's fitness?"
    assert validate_variant("What fitness does the mutant have, given the wild type MQYKLILNGKTLKGETTTEA "
                            "has fitness 1?", q).kept
    assert validate_variant("What fitness does the mutant have, given the wild type MQYKLILNGKTLKGETTEA "
                            "has fitness 1?", q).reason == "lost_tokens"


def test_token_extraction_on_bundled_shapes():
    assert ("formula", "Y4Ca4Mn4Ni4O24") in kinds("Material Composition: Y4Ca4Mn4Ni4O24, Density: 5.59")
    assert ("number", "-0.14476") in kinds("Diffusion Barrier 1: -0.14476 eV")
    assert ("formula", "Fe") in kinds("Solute Element 1: Fe, Host Element 1: Al")
    assert not {t for t in kinds("He is In the As group") if t[0] == "formula"}
    assert ("identifier", "g=10m/s2") in kinds("estimate his speed (g=10m/s2)")
    assert ("number", "1.7") in kinds("He is 1.70m tall") and ("unit", "m") in kinds("He is 1.70m tall")
    assert not missing_tokens(protected_tokens("He is 1.70m tall"), "His height is 1.7 m")


def test_every_bundled_train_question_keeps_its_own_tokens():
    for s in load_bundled("sciknoweval/all", split="train"):
        assert missing_tokens(protected_tokens(s.question), s.question) == [], s.id


def test_added_numbers():
    v = validate_variant(GOOD + " Assume it takes 7 seconds.", PHYS)
    assert "added_numbers" in v.failed and "7" in v.detail
    q = "After a four-sites mutation, what is the fitness?"
    assert validate_variant("What is the fitness after a mutation at 4 sites?", q).kept  # four -> 4 is fine
    assert validate_variant(GOOD + " 3 s.", PHYS, rules=ValidationRules(forbid_new_numbers=False,
                                                                         max_length_ratio=5)).kept


def test_length_ratio():
    assert "length_ratio" in validate_variant("Force?", "What force acts on the steel ball moving in liquid "
                                                        "aluminum?").failed
    long = GOOD + " " + " ".join(["Consider the situation carefully."] * 10)
    assert "length_ratio" in validate_variant(long, PHYS).failed
    short_q = "How do you calculate the concentration of a solute?"
    assert validate_variant("Explain how the concentration of a dissolved solute in a solution is calculated, "
                            "step by step.", short_q).kept  # short originals get room (counted as 80 chars)


def test_option_listing_and_answer_leak():
    choices = ["Molarity = moles of solute / liters of solution", "Molarity = grams of solute / liters of solution"]
    q = "How do you calculate the concentration of a solute?"
    v = validate_variant("How is the concentration of a solute calculated?\nA. moles per liter\nB. grams per liter", q,
                         choices=choices)
    assert v.reason == "option_listing"
    v = validate_variant("How is the concentration of a solute calculated? (A) one way (B) another", q)
    assert v.reason == "option_listing"
    v = validate_variant("How is the concentration of a solute calculated? Options: see below", q)
    assert v.reason == "option_listing"
    v = validate_variant("How is the concentration of a solute calculated: is it molarity = moles of solute / liters "
                         "of solution or molarity = grams of solute / liters of solution?", q, choices=choices)
    assert "option_listing" in v.failed
    v = validate_variant("Is the concentration of a solute given by molarity = moles of solute / liters of "
                         "solution?", q, choices=choices, gold="A")
    assert v.reason == "answer_leak"


def test_prompt_echo():
    v = validate_variant("Rewrite the question below into different versions: what is the force on the ball "
                         "of density 7200 kg/m^3 in 2360 kg/m^3 aluminum with friction factor 0.2?", PHYS)
    assert v.reason == "prompt_echo"


def test_every_failing_rule_is_listed_in_rule_order():
    v = validate_variant("A. 5\nB. 6", PHYS, choices=["5", "6"])
    assert v.reason == "off_topic"
    assert set(v.failed) >= {"off_topic", "option_listing", "lost_tokens", "added_numbers", "length_ratio"}
    assert list(v.failed) == sorted(v.failed, key=RULES.index)


def test_similarity_is_symmetric_and_normalized():
    assert similarity("What is x?", "what is X") == 1.0
    assert similarity("a b c d", "d c b a") == similarity("d c b a", "a b c d") < 0.5


def test_digits_inside_formulas_do_not_license_new_numbers():
    q = "What is the steric number of $SF_6$?"
    v = validate_variant("Is the steric number of the chemical compound $SF_6$ exactly 6?", q)
    assert v.failed == ("added_numbers",) and "6" in v.detail  # a yes/no question with a value added
    assert validate_variant("Give the steric number of SF_6.", q).kept


def test_off_topic_and_not_a_question():
    q = "How do you calculate the concentration of a solute?"
    v = validate_variant("The original answer was too long. I will adapt it to fit the new format.", q)
    assert v.reason == "off_topic" and "0%" in v.detail  # chatter SmolLM2 wrote, sharing no content word
    assert validate_variant("What do I calculate the concentration of the solute?", q).kept
    v = validate_variant("To calculate the concentration of a solute, you can follow these steps:", q)
    assert v.failed == ("not_a_question",) and "':'" in v.detail
    v = validate_variant("The concentration of a solute is calculated from moles and volume.", q)
    assert v.failed == ("not_a_question",)
    assert validate_variant("Determine the concentration of a solute.", q).kept  # an instruction asks too
    assert validate_variant("Calculate the following for a solute concentration:", "Compute these:").kept
