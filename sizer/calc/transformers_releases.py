"""The transformers releases whose behaviour the transformers profile models, and what changed
between them, each fact read from that release's modeling files (tests/test_against_transformers.py
and tests/test_measure.py run the installed release against them).

A release is `(major, minor)`. A spec carries the release it describes (`ModelSpec.transformers_release`,
None for the newest modelled); `spec_for_release` gives the spec as a release runs it. The calculator
and planner describe the newest modelled release unless told another (`--engine transformers==5.24`):
a plan is for the machine it will run on, not the one it is made on. `sizer measure` predicts for the
installed transformers and says in one line when that release is not one sizer models.
"""

from __future__ import annotations

import re
from dataclasses import replace

from sizer.families.common import KEEP_FP32, KEEP_FP32_SINCE
from sizer.spec import ModelSpec

Release = tuple[int, int]

MODELLED: tuple[Release, ...] = ((5, 24), (5, 25))
NEWEST = MODELLED[-1]

# Falcon (modeling_falcon.py). Up to 5.24 FalconAttention ran its own attention: the new decoder
# broadcast K/V to every query head before the cache update (the cache held num_attention_heads
# heads), multi-query models passed SDPA one K/V head without enable_gqa (torch's math kernel), and
# eager attention softmaxed in the compute dtype with K/V broadcast inside matmul. From 5.25 it
# caches num_kv_heads heads and calls the shared attention functions (eager_attention_forward's
# repeat_kv and float32 softmax; sdpa_attention_forward), as Llama does; ALiBi moved into the mask.
FALCON_SHARED_ATTENTION_SINCE: Release = (5, 25)
FALCON_EXPANDED_CACHE_NOTE = ("transformers {release}'s Falcon cache stores K/V expanded to every attention head; "
                              "engines store KV heads only")


def parse_release(version: str) -> Release:
    """'5.24', '5.24.0', '5.25.0.dev0', '6.0.0rc1' -> (major, minor); ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\.(\d+)(?:[.\w+-]*)\s*", version)
    if not match:
        raise ValueError(f"not a transformers version: {version!r}")
    return int(match.group(1)), int(match.group(2))


def release_text(release: Release) -> str:
    return f"{release[0]}.{release[1]}"


def modelled_text() -> str:
    return ", ".join(release_text(r) for r in MODELLED)


def outside_note(version: str) -> str | None:
    """One line when an installed transformers `version` is not a release sizer models."""
    if parse_release(version) in MODELLED:
        return None
    return (f"transformers {version} is not a release sizer models ({modelled_text()}): predictions follow "
            f"its rules where they are known, the newest modelled release's elsewhere")


def release_of(spec: ModelSpec) -> Release:
    return spec.transformers_release or NEWEST


def falcon_own_attention(spec: ModelSpec) -> bool:
    """Falcon on a release whose FalconAttention runs its own attention code (before 5.25)."""
    return spec.family == "falcon" and release_of(spec) < FALCON_SHARED_ATTENTION_SINCE


def expands_cached_kv(spec: ModelSpec) -> bool:
    """Falcon's new decoder with grouped K/V heads on a release that caches them expanded."""
    return falcon_own_attention(spec) and spec.n_kv_heads not in (1, spec.n_heads)


def spec_for_release(spec: ModelSpec, release: Release) -> ModelSpec:
    """`spec` as transformers `release` loads and runs it: tensors whose fp32 rule came in a later
    release (families.KEEP_FP32_SINCE) in the load dtype, and the release's notes."""
    since = KEEP_FP32_SINCE.get(spec.family)
    tensors = spec.tensors
    if since is not None and release < since:
        keep = KEEP_FP32[spec.family]
        tensors = tuple(replace(t, fp32=False) if t.fp32 and keep(t) else t for t in tensors)
    out = replace(spec, tensors=tensors, transformers_release=release)
    release_note_tail = FALCON_EXPANDED_CACHE_NOTE.split("{release}", 1)[1]     # the note of any release
    notes = tuple(n for n in spec.notes if not n.endswith(release_note_tail))
    if expands_cached_kv(out):
        notes += (FALCON_EXPANDED_CACHE_NOTE.format(release=release_text(release)),)
    return replace(out, notes=notes)


def spec_for_transformers(spec: ModelSpec, version: str) -> ModelSpec:
    """`spec` as the transformers of `version` (e.g. transformers.__version__) runs it."""
    return spec_for_release(spec, parse_release(version))
