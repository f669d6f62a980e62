"""Does a model's prefill time depend on what ran just before it? measure_speed with the models dense,
pruned (magnitude 50%) and CSR, in both orders, with and without the untimed settling run (speed
version 2 settles; version 1 did not). Run it on a quiet machine:

    HF_HUB_OFFLINE=1 .venv/bin/python results/speed-order/speed_order.py gemma3-270m > results/speed-order/gemma3-270m.txt
    HF_HUB_OFFLINE=1 .venv/bin/python results/speed-order/speed_order.py smollm2-135m > results/speed-order/smollm2-135m.txt
"""
import copy
import datetime
import sys

import torch

from prunebench import evaluation_text, load_model, prune
from prunebench.data.datasets import tokenize_text
from prunebench.metrics.measurements import measure_speed, sparse_copy

name = sys.argv[1] if len(sys.argv) > 1 else "gemma3-270m"
model, tokenizer = load_model(name)
dense = copy.deepcopy(model)
prune(model, "magnitude", 0.5, torch.zeros(1, 8, dtype=torch.long), device="cpu", progress=False)
ids = tokenize_text(tokenizer, evaluation_text("pydoc"))[:512]
csr, _ = sparse_copy(model, "csr")
models = {"dense": dense, "pruned": model, "csr": csr}
print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ} {name}: prefill 512 tokens, 5 repeats after "
      f"1 warm-up, decode batch 1 of 8 tokens, torch threads {torch.get_num_threads()}")
for order in (("dense", "pruned", "csr"), ("pruned", "dense", "csr")):
    for settle in (False, True):
        result = measure_speed({k: models[k] for k in order}, ids, repeats=5, warmup=1, decode_batches=(1,),
                               decode_tokens=8, settle=settle)
        d = result["models"]["dense"]["prefill"]["seconds"]["median"]
        p = result["models"]["pruned"]["prefill"]["seconds"]["median"]
        print(f"order {', '.join(order)}; settling run {'yes' if settle else 'no'}: dense {d:.3f} s, pruned {p:.3f} s, "
              f"dense / pruned {d / p:.3f}", flush=True)
