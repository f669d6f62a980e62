"""lm-eval's HFLM with log-likelihoods computed at the continuation positions only.

HFLM runs the LM head and a log-softmax over the whole vocabulary at every position of every request,
then keeps the continuation's few. With Gemma 3's 262k-word vocabulary that is most of the cost (the
head alone has more multiply-adds per token than the decoder). `ContinuationLM` runs the decoder once
per batch and asks the model for logits only where the continuation is scored, through transformers'
`logits_to_keep` (the model's own final norm, head and soft-capping); everything else (tasks, requests,
metrics, the cache hook) stays lm-eval's, so lm-eval remains the scorer of record. Models whose forward
has no `logits_to_keep` are scored by HFLM's own loop."""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM


class ContinuationLM(HFLM):
    """HFLM whose `loglikelihood` computes logits at the continuation tokens' positions only."""

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        if self.backend != "causal" or "logits_to_keep" not in inspect.signature(self.model.forward).parameters:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        batch_size = self.batch_size if isinstance(self.batch_size, int) else (override_bs or 1)
        # Longest first, as HFLM orders them: batches of similar length pad little.
        order = sorted(range(len(requests)), key=lambda i: (-len(requests[i][1] + requests[i][2]),
                                                              tuple(requests[i][1] + requests[i][2])))
        results: list = [None] * len(requests)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            for index, answer in zip(chunk, self._score_batch([requests[i] for i in chunk])):
                results[index] = answer
                request_str = requests[index][0]
                if request_str is not None:
                    self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return results

    @torch.no_grad()
    def _score_batch(self, chunk) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probabilities, whether greedy decoding gives it) per request."""
        inputs, continuations = [], []
        for _, context, continuation in chunk:
            assert context and continuation and len(continuation) <= self.max_length
            # As HFLM: truncated from the left to the context window; the last token is only predicted.
            inputs.append((context + continuation)[-(self.max_length + 1):][:-1])
            continuations.append(continuation)
        width = max(len(tokens) for tokens in inputs)
        keep = max(len(c) for c in continuations)
        batch = torch.zeros(len(inputs), width, dtype=torch.long)  # right padding: no position before it changes
        positions = torch.zeros(len(inputs), keep, dtype=torch.long)
        for row, (tokens, continuation) in enumerate(zip(inputs, continuations)):
            batch[row, :len(tokens)] = torch.tensor(tokens)
            # The logits predicting the continuation sit at its last len(continuation) input positions;
            # a shorter continuation repeats its first position in front (the same count for every row).
            scored = torch.arange(len(tokens) - len(continuation), len(tokens))
            positions[row] = torch.cat([scored[:1].expand(keep - len(continuation)), scored])
        with torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                            enabled=self.mixed_precision_dtype is not None):
            logits = self.model(batch.to(self.device), logits_to_keep=positions.to(self.device)).logits
        log_probs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
        answers = []
        for row, continuation in enumerate(continuations):
            scored = log_probs[row, keep - len(continuation):]
            target = torch.tensor(continuation, device=scored.device)
            greedy = bool((scored.argmax(dim=-1) == target).all())
            answers.append((float(scored.gather(1, target[:, None]).sum()), greedy))
        return answers
