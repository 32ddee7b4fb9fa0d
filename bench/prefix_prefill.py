"""Shared-prefix prefill on PRM labelling: the step prefixes of a question's replies prefilled whole vs once per
common prompt.

Math-Shepherd labelling (``openrft.reward_models.labels.estimate_step_labels``, the prm stage's) continues every
step prefix of every reply; each prefix is the question's prompt (with ``--shots`` worked solutions, as the ICL
rows' prompts; each question its own) plus the reply up to that step. Samples ``--replies`` replies to each of
``--questions`` training questions of a bundled task from the bundled model, then labels them with the generator
prefilling each prompt whole (``share_prefixes=False``) and with prompts that start alike prefilling their common
part once (the default), alternating, ``--repeats`` times each, with the same seeds. Prints the seconds of each,
their ratio, the prompt tokens whole and with each shared prefix once (a lower bound on what is prefilled: a decode
batch takes rows in as it has room, so a family can be split between prefills) and whether the labels agree.

    python bench/prefix_prefill.py --threads 2 --shots 3      # the full row's prompts (multistep)
    python bench/prefix_prefill.py --threads 2 --shots 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def prefill_tokens(generator, prompts) -> tuple[int, int]:
    """Prompt tokens prefilled ``(whole, shared)`` for one ``generate`` call over ``prompts``."""
    from openrft.models.backends.hf_batch import shared_prefixes

    encoded = generator.encode(prompts)
    whole = sum(map(len, encoded))
    shared = sum(common + sum(len(encoded[m]) - common for m in members)
                 for common, members in shared_prefixes(encoded))
    return whole, shared


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="multistep")
    ap.add_argument("--questions", type=int, default=4, help="training questions (the prm stage's label_chunk)")
    ap.add_argument("--replies", type=int, default=8, help="policy replies per question (prm.n_completions)")
    ap.add_argument("--rollouts", type=int, default=4, help="continuations per step prefix (prm.n_rollouts)")
    ap.add_argument("--shots", type=int, default=3, help="worked-solution shots in each prompt")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch", type=int, default=64, help="decode batch (the small recipes' generation batch)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from openrft.data.loaders import load_bundled
    from openrft.models.allocator import keep_freed_memory
    from openrft.models.backends.base import SamplingParams
    from openrft.models.backends.hf import TransformersGenerator
    from openrft.models.loading import load_model
    from openrft.reward_models.labels import _prefix_prompts, estimate_step_labels
    from openrft.rewards.steps import split_steps
    from openrft.tasks import task_for

    keep_freed_memory()
    model, tokenizer = load_model(args.model)
    train = load_bundled(args.task, split="train")
    samples = train[: args.questions]
    # each question its own shots (the ICL rows give each its most similar training questions)
    shots_of = {s.id: train[args.questions + args.shots * i: args.questions + args.shots * (i + 1)]
                for i, s in enumerate(samples)}
    examples_for = (lambda s: shots_of[s.id]) if args.shots else None
    gens = {share: TransformersGenerator(model, tokenizer, batch_size=args.batch, share_prefixes=share)
            for share in (False, True)}
    prompts = [task_for(s).messages(s, list(examples_for(s)) if examples_for else []) for s in samples]
    replies = gens[False].generate(prompts, SamplingParams(n=args.replies, temperature=0.7, seed=1,
                                                           max_new_tokens=args.max_new_tokens))
    owners = [s for s, row in zip(samples, replies) for _ in row]
    texts = [c.text for row in replies for c in row]
    step_prompts = _prefix_prompts(owners, texts, [split_steps(t, "newline") for t in texts],
                                   {s.answer_type: task_for(s) for s in owners}, tokenizer, examples_for, True)[0]
    whole_tokens, shared_tokens = prefill_tokens(gens[True], step_prompts)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    labels: dict[bool, list] = {}
    for _ in range(args.repeats):
        for share in (False, True):
            t0 = time.perf_counter()
            labels[share] = estimate_step_labels(gens[share], owners, texts, n_rollouts=args.rollouts,
                                                 max_new_tokens=args.max_new_tokens, temperature=0.7, seed=0,
                                                 tokenizer=tokenizer, examples_for=examples_for)
            seconds[share].append(time.perf_counter() - t0)
    same = sum(a.labels == b.labels for a, b in zip(labels[False], labels[True]))
    whole_s, shared_s = statistics.median(seconds[False]), statistics.median(seconds[True])
    result = {"task": args.task, "shots": args.shots, "questions": args.questions, "replies": args.replies,
              "rollouts": args.rollouts, "threads": torch.get_num_threads(), "step_prefixes": len(step_prompts),
              "prompt_tokens_mean": round(whole_tokens / max(1, len(step_prompts)), 1),
              "prefill_tokens_whole": whole_tokens, "prefill_tokens_shared": shared_tokens,
              "seconds_whole": seconds[False], "seconds_shared": seconds[True],
              "speedup_median": round(whole_s / shared_s, 3), "replies_with_equal_labels": same,
              "replies_labelled": len(labels[False])}
    print(f"{args.task}, {args.shots} shots: {len(step_prompts)} step prefixes of {len(texts)} replies, "
          f"{result['prompt_tokens_mean']:.0f} prompt tokens each; prefill tokens {whole_tokens} whole, "
          f"{shared_tokens} with each shared prefix once (a lower bound: a batch takes rows in as it has room); "
          f"labelling s (median of {args.repeats}) {whole_s:.1f} whole vs {shared_s:.1f} "
          f"shared: {whole_s / shared_s:.2f}x; replies with equal labels {same}/{len(labels[False])}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
