"""A long fuzz run of the canonical decoder, every firmware adapter and the config loader.

The same strategies and oracles as tests/test_fuzz.py (tests/harness/strategies.py),
for longer: first every payload of the hostile corpus (deep nesting, oversize,
NaN, huge integers, bad UTF-8 in every field the decoders read) and of the
hostile config files, then hypothesis examples in rounds, target after target,
until the time is up. Prints the cases tried per target, the outcomes (accepted
or the rejection reason the service counts; ``config_error`` for the loader)
and every distinct crash with its smallest failing example. Pure CPU in one
process: no broker, no service (the suite's integration tests fuzz those).

    .venv/bin/python bench/fuzz.py [--seconds 60] [--seed N]

Exit status 1 when a target crashed or broke a property, else 0.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tomli_w
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.harness import strategies as fz

ROUND = 300  # hypothesis examples per target per round
ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass
class Target:
    name: str
    corpus: Callable[[], Iterable[tuple[Any, ...]]]  # fixed cases, tried first
    cases: st.SearchStrategy[tuple[Any, ...]]  # then examples of this
    judge: Callable[..., str]  # the oracle: an outcome label, or raises
    tried: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: dict[str, str] = field(default_factory=dict)  # where -> first failing example
    seconds: float = 0.0


def _adapter_target(source: str) -> Target:
    device_topics = [(d, t) for d, t in fz.DEVICE_TOPICS if d.source == source]
    topics = [t for _, t in device_topics]
    on_its_topics = st.sampled_from(device_topics).flatmap(
        lambda dt: st.tuples(
            st.just(dt[0]), st.just(dt[1]), fz.payloads(fz.ADAPTER_EXAMPLES[dt[1]]), st.booleans()
        )
    )
    injected = st.tuples(
        st.sampled_from([d for d, _ in device_topics]),
        fz.hostile_topics(topics),
        st.sampled_from([fz.encode(e) for t in topics for e in fz.ADAPTER_EXAMPLES[t]]),
        st.booleans(),
    )
    return Target(
        name=source,
        corpus=lambda: (
            (d, t, p, r) for d, t in device_topics for p in fz.HOSTILE_CORPUS for r in (False, True)
        ),
        cases=on_its_topics | injected,
        judge=fz.adapter_outcome,
    )


def targets() -> list[Target]:
    canonical = st.tuples(
        st.sampled_from(fz.CANONICAL_TOPICS) | fz.hostile_topics(fz.CANONICAL_TOPICS),
        fz.payloads(fz.CANONICAL_EXAMPLES),
    )
    config = st.one_of(
        fz.config_documents().map(lambda doc: (tomli_w.dumps(doc),)),
        fz.byte_mutants([fz.BASE_CONFIG_TOML.encode()]).map(lambda text: (text,)),
    )
    return [
        Target(
            name="canonical",
            corpus=lambda: ((t, p) for t in fz.CANONICAL_TOPICS for p in fz.HOSTILE_CORPUS),
            cases=canonical,
            judge=fz.canonical_outcome,
        ),
        *(_adapter_target(source) for source in ("zigbee2mqtt", "esphome", "tasmota", "shelly")),
        Target(
            name="config",
            corpus=lambda: ((text,) for text in fz.HOSTILE_CONFIGS),
            cases=config,
            judge=fz.config_outcome,
        ),
    ]


def _where(exc: BaseException) -> str:
    """The exception type and the innermost frame in this repository: one line per bug."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(ROOT)]
    place = f"{Path(frames[-1].filename).relative_to(ROOT)}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__} at {place}"


def _short(case: tuple[Any, ...]) -> str:
    shown = repr(case)
    return shown if len(shown) <= 300 else shown[:297] + "..."


def run_corpus(target: Target) -> None:
    start = time.perf_counter()
    for case in target.corpus():
        target.tried += 1
        try:
            target.outcomes[target.judge(*case)] += 1
        except Exception as exc:  # a crash or a broken property: what this bench looks for
            target.outcomes["CRASH"] += 1
            target.crashes.setdefault(_where(exc), f"{exc!r:.200} on {_short(case)}")
    target.seconds += time.perf_counter() - start


def run_round(target: Target, round_seed: int | None) -> None:
    def body(case: tuple[Any, ...]) -> None:
        target.tried += 1
        target.outcomes[target.judge(*case)] += 1

    test = settings(
        max_examples=ROUND,
        deadline=None,
        database=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )(given(target.cases)(body))
    if round_seed is not None:
        test = seed(round_seed)(test)
    start = time.perf_counter()
    try:
        test()
    except Exception as exc:
        target.outcomes["CRASH"] += 1
        notes = " ".join(getattr(exc, "__notes__", []))  # hypothesis: the shrunk example
        target.crashes.setdefault(_where(exc), f"{exc!r:.200}; {notes[:600]}")
    target.seconds += time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time for the random rounds")
    parser.add_argument("--seed", type=int, help="seed the rounds, for a repeatable run")
    args = parser.parse_args(argv)

    all_targets = targets()
    for target in all_targets:
        run_corpus(target)
    corpus_sizes = {t.name: t.tried for t in all_targets}
    deadline = time.monotonic() + args.seconds
    rounds = 0
    while time.monotonic() < deadline:
        for target in all_targets:
            if time.monotonic() >= deadline:
                break
            run_round(target, None if args.seed is None else args.seed + rounds)
        rounds += 1

    print(f"fuzz: {args.seconds:g} s of random rounds of {ROUND} examples after the fixed corpus")
    print(f"{'target':<12} {'cases':>9} {'corpus':>7} {'cases/s':>8}  outcomes")
    for t in all_targets:
        outcomes = "  ".join(f"{k} {v}" for k, v in sorted(t.outcomes.items()))
        rate = t.tried / t.seconds if t.seconds else 0.0
        print(f"{t.name:<12} {t.tried:>9,} {corpus_sizes[t.name]:>7,} {rate:>8,.0f}  {outcomes}")
    crashes = [(t.name, where, ex) for t in all_targets for where, ex in t.crashes.items()]
    print(f"crashes: {len(crashes)} distinct")
    for name, where, example in crashes:
        print(f"  {name}: {where}\n    {example}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
