"""The one place that knows how transformers spells its KV-cache API.

transformers 5.x renamed the forward argument ``past_key_values`` to ``cache`` (and the output
field ``past_key_values`` to ``cache``); the old name is deprecated with removal announced.
Every caller in greenllm (the decode loops, the evaluators' shared-prefix cache, the
calibration capture, benchmarks) passes and reads the cache through these functions, so a
model is driven with whichever name its ``forward`` takes and no deprecation warning comes
from greenllm's own calls. No torch or transformers import here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

#: newest first: the name a forward is asked with when it takes both
CACHE_ARG_NAMES = ("cache", "past_key_values")

#: keyword names a layer or model may receive for the cache (to filter captured kwargs)
CACHE_KWARG_NAMES = frozenset({"cache", "past_key_values", "past_key_value"})


def forward_params(fn: Callable[..., Any]) -> set[str]:
    """The named parameters of a callable (a model, its ``forward`` or a module); an empty set
    when the signature cannot be read."""
    target = getattr(fn, "forward", fn)
    try:
        return set(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return set()


def cache_arg(fn: Callable[..., Any]) -> str | None:
    """The name under which ``fn`` (a model or its forward) takes a KV cache, or None."""
    params = forward_params(fn)
    for name in CACHE_ARG_NAMES:
        if name in params:
            return name
    return None


def cache_kwargs(fn: Callable[..., Any], cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for the cache argument ``fn`` takes (empty when ``cache`` is None).
    A forward that takes neither name is given the current one, ``cache``: models with
    ``**kwargs`` forward it to their layers under that name."""
    if cache is None:
        return {}
    return {cache_arg(fn) or CACHE_ARG_NAMES[0]: cache}


def output_cache(out: Any) -> Any:
    """The KV cache a forward pass returned (``out.cache`` or the older
    ``out.past_key_values``), or None."""
    for name in CACHE_ARG_NAMES:
        value = getattr(out, name, None)
        if value is not None:
            return value
    return None


def takes_cache_position(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` still takes ``cache_position`` (older transformers: static caches are
    indexed by it; newer ones track the write position in the cache itself)."""
    return "cache_position" in forward_params(fn)
