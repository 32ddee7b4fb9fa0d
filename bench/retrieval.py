"""Few-shot retrieval (OpenRFT 2.3.1) on the bundled SciKnowEval train split: speed and paraphrase recall.

Builds the per-task ``FewShotIndex`` (bundled all-MiniLM-L6-v2, faiss ``IndexFlatIP`` on unit
vectors) over every train question, then queries it with a perturbed copy of each question and
checks whether the exact source ("parent") comes back first (recall@1) or among the top 3 (recall@3).

The paraphrases are SYNTHETIC, made without an LLM by a deterministic perturbation:

* ``edit``: a light edit of the stem: English stop words dropped and two adjacent word pairs
  swapped (RNG seeded by the sample id); options unchanged;
* ``shuffle+edit``: that, plus the answer options reordered with ``openrft.augment.shuffle``.

(Options shuffled with the stem untouched is, by design, a *duplicate question*, which the index
never returns; the bench checks that it is excluded for every question.)

They test robustness to surface changes, not to real rewording; a real paraphrase moves
further. Queries carry a new id and no ``parent_id``, so the exclusions (self, family, duplicate
question) do not hide the parent. Timings: index build (embedding + indexing), batched queries
(embedding + search + exclusion filter) and single queries (one ``query`` call each).

    python bench/retrieval.py                                   # all 8 tasks, 800 train questions
    python bench/retrieval.py --tasks chemical_calculation --limit 20   # quick
"""

from __future__ import annotations

import argparse
import platform
import random
import re
import statistics
import time

STOP_WORDS = frozenset(
    "a an the of to in on at by for from with and or is are was were be been being this that these those "
    "which what it its as into than then there their if".split())
_WORD = re.compile(r"\S+")


def edit_question(text: str, key: str, swaps: int = 2) -> str:
    """Drop stop words and swap ``swaps`` adjacent word pairs, deterministically per ``key``.

    >>> edit_question("What is the mass of the ball in the box?", "k", swaps=0)
    'mass ball box?'
    """
    words = [w for w in _WORD.findall(text) if w.lower().strip(",.;:?!()") not in STOP_WORDS] or text.split()
    rng = random.Random(f"bench-retrieval:{key}")
    for _ in range(swaps if len(words) > 2 else 0):
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def perturb(sample, mode: str, seed: int = 0):
    from openrft.augment.shuffle import shuffle_options, shuffle_skip_reason

    q = sample.replace(id=f"{sample.id}#para", meta={})
    if "shuffle" in mode and shuffle_skip_reason(q) is None:
        q = shuffle_options(q, seed, key=q.id).replace(meta={})
    if "edit" in mode:
        q = q.replace(question=edit_question(q.question, sample.id))
    return q


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sciknoweval/all", help="bundled dataset (train split is indexed)")
    ap.add_argument("--tasks", nargs="*", default=None, help="only these tasks (Sample.task names)")
    ap.add_argument("--limit", type=int, default=0, help="first N train questions per task (0 = all)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--single-queries", type=int, default=50, help="queries timed one call at a time")
    ap.add_argument("--device", default=None, help="embedder device (default: GPU when present, else CPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from openrft.data.loaders import load_bundled
    from openrft.retrieval import FewShotIndex, load_embedder, question_text

    train = load_bundled(args.data, "train")
    tasks = list(dict.fromkeys(s.task for s in train))
    if args.tasks:
        unknown = set(args.tasks) - set(tasks)
        if unknown:
            raise SystemExit(f"unknown task(s) {sorted(unknown)}; valid: {', '.join(tasks)}")
        tasks = [t for t in tasks if t in args.tasks]
    per_task = {t: [s for s in train if s.task == t] for t in tasks}
    if args.limit:
        per_task = {t: v[: args.limit] for t, v in per_task.items()}
    train = [s for v in per_task.values() for s in v]

    t0 = time.perf_counter()
    embedder = load_embedder(device=args.device)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = FewShotIndex.build(train, embedder, batch_size=args.batch_size)
    build_s = time.perf_counter() - t0

    modes = ("edit", "shuffle+edit")
    recall: dict[str, dict[str, list[float]]] = {m: {t: [0, 0] for t in tasks} for m in modes}
    timing: dict[str, float] = {}
    for mode in modes:
        queries = [perturb(s, mode, args.seed) for s in train]
        t0 = time.perf_counter()
        hits = index.search(queries, args.k, batch_size=args.batch_size)
        timing[mode] = time.perf_counter() - t0
        for s, h in zip(train, hits):
            ids = [x.sample.id for x in h]
            recall[mode][s.task][0] += ids[:1] == [s.id]
            recall[mode][s.task][1] += s.id in ids[:3]
    dup_hits = index.search([perturb(s, "shuffle", args.seed) for s in train], args.k, allow_fewer=True)
    dup_excluded = sum(s.id not in {x.sample.id for x in h} for s, h in zip(train, dup_hits))
    queries = [perturb(s, "shuffle+edit", args.seed) for s in train]
    t0 = time.perf_counter()
    embedder.encode([question_text(q) for q in queries], batch_size=args.batch_size)
    encode_s = time.perf_counter() - t0
    single = []
    for q in queries[:: max(1, len(queries) // max(1, args.single_queries))][: args.single_queries]:
        t0 = time.perf_counter()
        index.query(q, args.k)
        single.append(time.perf_counter() - t0)

    n = len(train)
    device = str(next(embedder.model.parameters()).device) if hasattr(embedder.model, "parameters") else "?"
    print(f"retrieval bench: {args.data} train, {len(tasks)} task(s), {n} questions indexed, k={args.k}, "
          f"embedder {embedder.name} on {device}, batch {args.batch_size}")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("paraphrases are SYNTHETIC (no LLM): 'edit' = stop words dropped + 2 adjacent-word swaps in the stem; "
          "'shuffle+edit' = that + options reordered (openrft.augment.shuffle)")
    print(f"options-shuffled-only copies (duplicate questions): parent excluded for {dup_excluded}/{n}")
    print(f"\nembedder load {load_s:.1f} s; index build {build_s:.2f} s ({n / build_s:.0f} questions/s, "
          "embedding included)")
    per_q = {m: 1000 * timing[m] / n for m in modes}
    print(f"batched query (embed + search + filter): {per_q['shuffle+edit']:.2f} ms/query "
          f"({n} queries in {timing['shuffle+edit']:.2f} s); of which embedding {1000 * encode_s / n:.2f} ms/query")
    if single:
        print(f"single query (one call each, {len(single)} timed): median {1000 * statistics.median(single):.1f} ms, "
              f"max {1000 * max(single):.1f} ms")
    header = f"\n{'task':34s} {'n':>4s}" + "".join(f" {m + ' R@1':>17s} {m + ' R@3':>17s}" for m in modes)
    print(header)
    print("-" * (len(header) - 1))
    rows: dict[str, dict] = {}
    for t in tasks + ["all"]:
        cnt = len(per_task[t]) if t != "all" else n
        row = {"n": cnt}
        for m in modes:
            r1 = sum(recall[m][x][0] for x in (tasks if t == "all" else [t])) / cnt
            r3 = sum(recall[m][x][1] for x in (tasks if t == "all" else [t])) / cnt
            row[f"{m}_r1"], row[f"{m}_r3"] = r1, r3
        rows[t] = row
        print(f"{t:34s} {cnt:4d}" + "".join(f" {row[f'{m}_r1']:17.3f} {row[f'{m}_r3']:17.3f}" for m in modes))
    return {"questions": n, "tasks": tasks, "load_s": load_s, "build_s": build_s,
            "batched_ms_per_query": per_q["shuffle+edit"], "encode_ms_per_query": 1000 * encode_s / n,
            "single_query_ms_median": 1000 * statistics.median(single) if single else None,
            "duplicates_excluded": dup_excluded, "rows": rows}


if __name__ == "__main__":
    main()
