"""A text's identity in a dataset: its normalised form, which decides both which rows are
duplicates and which split a row falls in.

The split is a pure function of the normalised text (not of the row's position or of the other
rows), so adding rows never moves an existing row from one split to another: a text tested on
once is never trained on later. Changing the percentages does move rows; the manifest records them.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

SPLITS = ("train", "validation", "test")


def normalise(text: str) -> str:
    """NFKC (full-width and compatibility forms fold to one), casefolded, whitespace collapsed and stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class SplitPercents:
    test: int = 10
    validation: int = 10

    def __post_init__(self) -> None:
        if min(self.test, self.validation) < 0 or self.test + self.validation > 100:
            raise ValueError(f"test {self.test} % and validation {self.validation} % must be ≥ 0 and add up to at most 100")

    def split_of(self, key: str) -> str:
        """The split of a normalised text: its hash's bucket 0-99, the first `test` buckets test,
        the next `validation` buckets validation, the rest train."""
        bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100
        if bucket < self.test:
            return "test"
        if bucket < self.test + self.validation:
            return "validation"
        return "train"
