"""Noise sources, stream addresses and seed derivation (docs/design.md, "Noise addressing").

Every Gaussian draw has the address ``(seed, stream, uid, step, element)``. This module fixes
how the library fills the fields:

* ``seed`` comes from a **noise source**, one per purification call:
  ``stochastic()`` draws a fresh secret 64-bit seed from the OS (``secrets``) on each call —
  the usual stochastic white-box defence; ``replay(seed)`` returns the same seed every call —
  the DW-box setting, where the attacker is given the seed the defence will use.
  The seeds a run uses are named, not drawn in order: :func:`derive_seed` hashes the run's
  master seed with a purpose path (stage, attack, seed index, iteration, ...).
* ``stream`` separates uses: ``stream(kind, replica)`` = ``replica * 16 + kind`` with
  ``kind`` one of the ``FORWARD`` / ``REVERSE`` / ``ADDT_*`` constants below and ``replica``
  the EOT replica index (0 for a single purification). Replica k of an EOT batch thus gets
  noise independent of replica j while the uid stays the dataset index.
* ``step``: for forward diffusion, the target timestep; for a reverse step, the ORIGINAL
  timestep t of that step (0..999), not its position in a respaced chain. One stream for all
  reverse steps, addressed by t: a 1000-step respacing of the full range is therefore the
  plain chain, noise included.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

FORWARD = 0  # forward diffusion x_0 -> x_t* of a purification
REVERSE = 1  # reverse-chain noise (step field = original timestep)
ADDT_TIME = 2  # ADDT: timestep draw
ADDT_NOISE = 3  # ADDT: training noise eps
ADDT_DELTA = 4  # ADDT: CGPO initial delta / RBGM draws
TRAIN = 5  # plain DDPM training noise
GUIDANCE = 6  # GDMP guidance: the draw that re-noises the guidance target (step field = original timestep)
ADDT_DROPOUT = 7  # ADDT: dropout masks of the fine-tuned network (step field = dropout layer)
NUM_KINDS = 16
MAX_REPLICA = (2**32) // NUM_KINDS - 1


def stream(kind: int, replica: int = 0) -> int:
    """The stream of a use ``kind`` for EOT replica ``replica`` (fits in 32 bits)."""
    if not 0 <= kind < NUM_KINDS:
        raise ValueError(f"noise kind must be in [0, {NUM_KINDS}), got {kind}")
    if not 0 <= replica <= MAX_REPLICA:
        raise ValueError(f"replica must be in [0, {MAX_REPLICA}], got {replica}")
    return replica * NUM_KINDS + kind


@dataclass(frozen=True)
class NoiseSource:
    """Yields the seed of each purification call: fresh and secret, or a fixed replayed one."""

    mode: str  # "stochastic" | "replay"
    seed: int | None = None

    def next_seed(self) -> int:
        if self.mode == "stochastic":
            return secrets.randbits(64)
        return int(self.seed)

    def __repr__(self) -> str:  # never print a secret; a replay seed is public by definition
        return "stochastic()" if self.mode == "stochastic" else f"replay({self.seed})"


def stochastic() -> NoiseSource:
    """Fresh secret seed (``secrets.randbits(64)``, from os.urandom) per purification call."""
    return NoiseSource("stochastic")


class NamedSource:
    """Fresh noise per purification call, as :func:`stochastic`, but the n-th call's seed is named:
    ``derive_seed(base, "call", n)``. What a run's defence draws with when a call gives no ``seed=``,
    so that every draw of an evaluation is reproducible (the run's code names every seed it uses;
    this is the net under it)."""

    mode = "stochastic"

    def __init__(self, base: int):
        self.base, self.calls = int(base), 0

    def next_seed(self) -> int:
        self.calls += 1
        return derive_seed(self.base, "call", self.calls - 1)

    def __repr__(self) -> str:
        return f"named({self.base})"


def named(base: int) -> NamedSource:
    """Fresh seeds named by ``base`` and the call's number (:class:`NamedSource`)."""
    return NamedSource(base)


def replay(seed: int) -> NoiseSource:
    """DW-box: every call uses ``seed``, which the attacker knows."""
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"replay seed must be in [0, 2^64), got {seed}")
    return NoiseSource("replay", seed)


def derive_seed(base: int, *purpose) -> int:
    """The 63-bit seed named by ``base`` and a purpose path (strings and integers): the same on
    every run, platform and process, and independent of call order or batch layout. The one
    seed derivation of the library (runs, stages, attacks, ADDT). 63 bits: a valid seed for
    ``torch.Generator`` and the ops' int64 seed argument."""
    key = repr((int(base), *purpose)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
