"""Reorganisation detection from a block number -> hash map the caller keeps.

The caller remembers the canonical hashes of recent blocks (the scanner returns them in
``ScanResult.block_hashes``; :func:`remember_block_hashes` merges and trims). Before each scan,
:func:`detect_reorg` compares the newest remembered hash with the node's; if it changed, it walks back to the
newest block whose hash still matches (the common ancestor) and tells the caller to rewind to the block after it:
logs at or above ``rewind_to_block`` are orphaned and that range is scanned again.

Nodes never announce reorganisations reliably (anvil never reports ``removed: true`` logs), so hashes are the
source of truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from chain.addresses import normalize_hash
from chain.rpc import ChainReader

DEFAULT_KEEP_BLOCKS = 128


@dataclass(frozen=True)
class ReorgCheck:
    """The outcome of :func:`detect_reorg`.

    - ``reorged``: a remembered block is no longer canonical.
    - ``rewind_to_block``: the first block to scan again (the one after the common ancestor); ``None`` if no
      reorganisation.
    - ``common_ancestor_block``: the newest remembered block still canonical (``None`` if none of them is).
    - ``deeper_than_memory``: no remembered block matched, so the fork point is at or before the oldest remembered
      block; the caller rewinds to ``rewind_to_block`` (the oldest remembered) and treats it as a deep
      reorganisation (what it credited below that may also have changed).
    - ``changed_blocks``: remembered blocks whose hash changed or that the node no longer has.
    """

    reorged: bool
    rewind_to_block: int | None = None
    common_ancestor_block: int | None = None
    deeper_than_memory: bool = False
    changed_blocks: tuple[int, ...] = ()


NO_REORG = ReorgCheck(reorged=False)


def detect_reorg(rpc: ChainReader, known_hashes: Mapping[int, str], *, batch_blocks: int = 32) -> ReorgCheck:
    """Compare ``known_hashes`` (block number -> hash) with the node's canonical chain.

    One call when nothing changed (the newest remembered block: if its hash holds, so do its ancestors'); else the
    remembered blocks are checked newest first, ``batch_blocks`` per call, until one matches.
    """
    if not known_hashes:
        return NO_REORG
    numbers = sorted(known_hashes, reverse=True)
    newest = numbers[0]
    if _same(rpc.block_hashes([newest]).get(newest), known_hashes[newest]):
        return NO_REORG
    changed: list[int] = [newest]
    remaining = numbers[1:]
    for offset in range(0, len(remaining), batch_blocks):
        batch = remaining[offset : offset + batch_blocks]
        canonical = rpc.block_hashes(batch)
        for number in batch:
            if _same(canonical.get(number), known_hashes[number]):
                return ReorgCheck(
                    reorged=True,
                    rewind_to_block=number + 1,
                    common_ancestor_block=number,
                    changed_blocks=tuple(sorted(changed)),
                )
            changed.append(number)
    return ReorgCheck(
        reorged=True,
        rewind_to_block=numbers[-1],
        common_ancestor_block=None,
        deeper_than_memory=True,
        changed_blocks=tuple(sorted(changed)),
    )


def remember_block_hashes(
    known_hashes: Mapping[int, str],
    new_hashes: Mapping[int, str],
    *,
    keep_blocks: int = DEFAULT_KEEP_BLOCKS,
) -> dict[int, str]:
    """``known_hashes`` updated with ``new_hashes``, keeping only the newest ``keep_blocks`` block numbers."""
    merged = {**known_hashes, **{number: normalize_hash(value) for number, value in new_hashes.items()}}
    if len(merged) <= keep_blocks:
        return dict(sorted(merged.items()))
    keep = sorted(merged)[-keep_blocks:]
    return {number: merged[number] for number in keep}


def forget_from(known_hashes: Mapping[int, str], first_block: int) -> dict[int, str]:
    """``known_hashes`` without the blocks at or above ``first_block`` (after a rewind)."""
    return {number: value for number, value in known_hashes.items() if number < first_block}


def non_canonical_blocks(rpc: ChainReader, blocks: Iterable[tuple[int, str]]) -> set[tuple[int, str]]:
    """The ``(block_number, block_hash)`` pairs that are not on the node's canonical chain now.

    Use it to re-check a deposit's block at crediting time.
    """
    wanted = {(number, normalize_hash(value)) for number, value in blocks}
    if not wanted:
        return set()
    canonical = rpc.block_hashes({number for number, _ in wanted})
    return {(number, value) for number, value in wanted if canonical.get(number) != value}


def _same(canonical: str | None, known: str) -> bool:
    return canonical is not None and canonical.lower() == known.lower()
