"""Does a model's prefill time depend on what ran just before it? measure_speed with the models
dense, pruned (magnitude 50%), CSR in two orders, with and without the untimed settling run."""
import torch, copy, time
from prunebench.models import load_model
from prunebench.engine import prune
from prunebench.efficiency import measure_speed
from prunebench.data import evaluation_text, tokenize_text
import sys
m, tok = load_model(sys.argv[1] if len(sys.argv) > 1 else "gemma3-270m")
dense = copy.deepcopy(m)
prune(m, "magnitude", 0.5, torch.zeros(1, 8, dtype=torch.long), device="cpu", progress=False)
ids = tokenize_text(tok, evaluation_text("pydoc"))[:512]
from prunebench.efficiency import sparse_copy
csr, _ = sparse_copy(m, "csr")
for order, settle in ((("dense", "pruned", "csr"), False), (("dense", "pruned", "csr"), True), (("pruned", "dense", "csr"), True)):
    models = {"dense": dense, "pruned": m, "csr": csr}
    r = measure_speed({k: models[k] for k in order}, ids, repeats=5, warmup=1, decode_batches=(1,), decode_tokens=8, settle=settle)
    d = r["models"]["dense"]["prefill"]["seconds"]["median"]; p = r["models"]["pruned"]["prefill"]["seconds"]["median"]
    print(order, "settle", settle, "dense s", round(d, 3), "pruned s", round(p, 3), "dense/pruned", round(d / p, 3), flush=True)
