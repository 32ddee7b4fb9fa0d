"""CHAMP (Mao et al. 2024, the ``champ-dataset`` package, MIT licence) as PRM step labels.

540 solutions by GPT-3.5, GPT-4, GPT-4 Turbo and PaLM 2 Medium to 270 competition-style problems, each
annotated with its first wrong step as a character span, or "no mistake". The data ships inside the package;
nothing is downloaded.
"""

from __future__ import annotations

from openrft.data.sample import DataError
from openrft.reward_models.labels import StepExample
from openrft.rewards.steps import split_steps

__all__ = ["CHAMP_LICENSE", "champ_step_labels", "load_champ"]

CHAMP_LICENSE = "MIT (champ-dataset 1.0.0, Copyright 2024 Yujun Mao, Yoon Kim, Yilun Zhou)"


def champ_step_labels(text: str, wrong_start: int | None, step_rule: str = "newline") -> tuple[list[str], list[float]]:
    """Steps of ``text`` and their labels given the first wrong step's start offset (None: no mistake).

    A step that ends at or before ``wrong_start`` is labelled 1; the step holding ``wrong_start``
    (the first wrong step, even when the annotated span starts inside it) and every later one 0.

    >>> champ_step_labels("a=1\\nb=2\\nc=9\\nd", 8)
    (['a=1', 'b=2', 'c=9', 'd'], [1.0, 1.0, 0.0, 0.0])
    >>> champ_step_labels("a=1\\nb=2", None)
    (['a=1', 'b=2'], [1.0, 1.0])
    """
    steps = split_steps(text, step_rule)
    if wrong_start is None:
        return [s.text for s in steps], [1.0] * len(steps)
    return [s.text for s in steps], [1.0 if s.end <= wrong_start else 0.0 for s in steps]


def load_champ(step_rule: str = "newline", include_correct: bool = True, version: str = "v0") -> list[StepExample]:
    """CHAMP's first-wrong-step annotations as step labels (needs ``pip install champ-dataset``; no network).

    Each annotated model solution is split into steps by ``step_rule``; steps before the
    annotated first wrong step are labelled 1, that step and all after it 0; a solution
    annotated "no mistake" has all steps 1 (``include_correct=False`` leaves those out).
    ``source`` is ``champ:<model>|<prompt setting>``; ``meta`` keeps the problem id, its
    gold answer and the annotated wrong span.
    """
    try:
        import champ_dataset
    except ImportError:
        raise ImportError("CHAMP step labels need the champ-dataset package (MIT licence, data ships inside): "
                          "pip install champ-dataset") from None
    dataset = champ_dataset.load(version)
    out: list[StepExample] = []
    for pid, problem in dataset.problems.items():
        for setting, ann in sorted((problem.fws_annotations or {}).items()):
            if not ann.text or not ann.text.strip():
                continue
            if ann.start_idx is None and not include_correct:
                continue
            steps, labels = champ_step_labels(ann.text, ann.start_idx, step_rule)
            if not steps:
                continue
            wrong = None if ann.start_idx is None else ann.text[ann.start_idx:ann.end_idx]
            out.append(StepExample(problem.text, steps, labels, source=f"champ:{setting}",
                                   meta={"problem": pid, "answer": problem.answer, "first_wrong_step": wrong,
                                         "author": ann.author}))
    if not out:
        raise DataError(f"champ-dataset {version!r} holds no first-wrong-step annotations this loader can read; "
                        "check the installed package version")
    return out
