"""Few-shot (ICL) retrieval: embedder, per-task vector index, and the ``examples_for`` hook for every stage.

>>> from openrft.retrieval import make_examples_for                  # doctest: +SKIP
>>> examples_for = make_examples_for(train, k=3, index_dir="runs/x/retrieval")  # doctest: +SKIP
>>> task_for(s).messages(s, examples_for(s))                          # doctest: +SKIP

Heavy libraries (faiss, sentence-transformers, torch) are imported when an index or model is made.
"""

from openrft.retrieval.embedder import (DEFAULT_EMBEDDER, Embedder, EmbedderNotAvailableError, embedder_label,
                                        load_embedder)
from openrft.retrieval.fewshot import FewShotExamples, build_or_load_index, make_examples_for
from openrft.retrieval.index import (FORMAT_VERSION, FewShotIndex, Hit, IndexMismatchError, duplicate_key, family_id,
                                     question_text, samples_hash)

__all__ = ["DEFAULT_EMBEDDER", "FORMAT_VERSION", "Embedder", "EmbedderNotAvailableError", "FewShotExamples",
           "FewShotIndex", "Hit", "IndexMismatchError", "build_or_load_index", "duplicate_key", "embedder_label",
           "family_id", "load_embedder", "make_examples_for", "question_text", "samples_hash"]
