import copy, time, torch
from prunebench.models import load_model
from prunebench.engine import prune
from prunebench.data import calibration_documents, sample_calibration, calibration_windows
from prunebench.walk import decoder_layers, prunable_linears
t0 = time.time()
m32, tok = load_model('tiny-llama')
small = sample_calibration(tok, calibration_documents("pydoc"), nsamples=4, seqlen=32, seed=0)
big = calibration_windows(tok, "pydoc", 32, 128, 0, None)
def masks(m): return {f"{i}.{n}": (l.weight.detach().float().cpu() == 0) for i, L in enumerate(decoder_layers(m)) for n, l in prunable_linears(L).items()}
def agree(a, b): return sum(int((a[k] == b[k]).sum()) for k in a) / sum(a[k].numel() for k in a)
for calname, cal in (("small", small), ("big", big)):
    for method in ("wanda", "sparsegpt"):
        ref = copy.deepcopy(m32); prune(ref, method, 0.5, cal, device="cpu", progress=False); R = masks(ref)
        for how in ("loaded16", "cast16", "loaded32cuda"):
            m = {"loaded16": lambda: load_model('tiny-llama', 'float16')[0], "cast16": lambda: copy.deepcopy(m32).half(),
                 "loaded32cuda": lambda: load_model('tiny-llama')[0]}[how]()
            for bs in (8, 2):
                mm = copy.deepcopy(m)
                prune(mm, method, 0.5, cal, device="cuda", progress=False, batch_size=bs)
                M = masks(mm)
                per = {k: round(float((M[k] == R[k]).float().mean()), 3) for k in list(M)[:7]}
                finite = all(torch.isfinite(p).all() for p in mm.parameters())
                with torch.no_grad():
                    out = mm.cuda()(input_ids=cal[:2].cuda()).logits
                print(calname, method, how, "bs", bs, "agree", round(agree(M, R), 5), "finite w", finite,
                      "finite logits", bool(torch.isfinite(out).all()), "layer0", per, flush=True)
print("seconds", time.time() - t0)
# The cuda test's own body, hooks and all.
for method in ("wanda", "sparsegpt"):
    cpu_model, cuda_model = load_model("tiny-llama")[0], load_model("tiny-llama", torch.float16)[0]
    prune(cpu_model, method, 0.5, small, device="cpu", progress=False)
    layers = decoder_layers(cuda_model)
    on_gpu = []
    hooks = [layer.register_forward_pre_hook(lambda *_: on_gpu.append(sum(next(l.parameters()).device.type == "cuda" for l in layers))) for layer in layers]
    prune(cuda_model, method, 0.5, small, device="cuda", progress=False)
    for h in hooks: h.remove()
    print("testlike", method, on_gpu, round(agree(masks(cuda_model), masks(cpu_model)), 5), flush=True)
