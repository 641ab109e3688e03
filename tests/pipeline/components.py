"""kfp components that more than one test pipeline runs.

No ``from __future__ import annotations`` here: kfp reads a component's annotations as types.
"""

from kfp import dsl


@dsl.component(base_image="python:3.11")
def make(n: int, word: str) -> str:
    """``word`` repeated ``n`` times: the first step of the three-step test pipelines."""
    return word * n


@dsl.component(base_image="python:3.11")
def nap(seconds: float) -> None:
    """Sleep ``seconds``: a step that is still running when a test looks."""
    import time

    time.sleep(seconds)


@dsl.pipeline(name="napper")
def napper(seconds: float = 1.5) -> None:
    """One uncached ``nap``."""
    nap(seconds=seconds).set_caching_options(False)
