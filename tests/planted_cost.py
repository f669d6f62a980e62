"""A known cost planted in a model, so a timing test has an answer that does not depend on the CPU."""
import time

from prunebench.models.walk import decoder_layers


def sleeping_layers(model, seconds: float):
    """Each decoder layer waits `seconds` before its forward; returns the model."""
    for layer in decoder_layers(model):
        def forward(*args, _original=layer.forward, **kwargs):
            time.sleep(seconds)
            return _original(*args, **kwargs)
        layer.forward = forward
    return model
