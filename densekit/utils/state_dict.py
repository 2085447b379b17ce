"""Comparing a checkpoint's state dict with a model's."""
from typing import Mapping, Optional


def describe_mismatch(expected: Mapping, found: Mapping, limit: int = 5) -> Optional[str]:
    """``None`` when ``found`` has exactly ``expected``'s keys and shapes; otherwise one line
    naming the missing, unexpected and mis-shaped keys (the first ``limit`` of each)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(f'{k}: checkpoint {tuple(found[k].shape)} vs model '
                    f'{tuple(expected[k].shape)}'
                    for k in set(expected) & set(found)
                    if hasattr(found[k], 'shape') and found[k].shape != expected[k].shape)

    def head(items):
        more = f' (+{len(items) - limit} more)' if len(items) > limit else ''
        return ', '.join(items[:limit]) + more
    parts = [f'{len(items)} {what} [{head(items)}]' for what, items in
             (('missing keys', missing), ('unexpected keys', unexpected),
              ('shape mismatches', shapes)) if items]
    return '; '.join(parts) or None
