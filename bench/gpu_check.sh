#!/usr/bin/env bash
# The prepared GPU check: run as-is on a machine with CUDA (the device machine's image has torch and
# transformers; carry the project's other wheels). It runs every test marked gpu (one generation, synthesis
# round, SFT epoch, RL step with grpo and gae, PRM scoring and evaluation on the bundled model, plus the CUDA
# loss/advantage checks), then the hardware-limit benchmark on CUDA in bf16. Results land in ${OUT:-runs/gpu-check}:
# pytest's log and mfu.json, whose figures go into bench/README.md with the date and the card.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/gpu-check}"
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
    | tee "$out/device.txt" || exit 2
python -m pytest -m gpu -q -p no:cacheprovider tests/gpu tests/rl 2>&1 | tee "$out/pytest-gpu.log"
tests=${PIPESTATUS[0]}
python bench/mfu.py --device cuda --json "$out/mfu.json" 2>&1 | tee "$out/mfu.log"
mfu=${PIPESTATUS[0]}
echo "gpu tests exit $tests, mfu exit $mfu"
exit $(( tests || mfu ))
