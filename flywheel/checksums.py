"""Per-file sha256 checksums of a model directory, written beside it and checked at load.

``checksums.sha256`` uses ``sha256sum``'s format (``sha256sum -c checksums.sha256`` verifies
it by hand). A directory that ships one is verified by :func:`verify_checksums` before
anything is loaded from it: a missing, changed or unlisted weight file is an error that
names the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHECKSUMS = "checksums.sha256"
UNCHECKED = {CHECKSUMS, "README.md"}  # the model card is documentation, edited after training


class ChecksumError(ValueError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in UNCHECKED)


def write_checksums(folder: Path) -> Path:
    folder = Path(folder)
    lines = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n" for p in _files(folder)]
    (folder / CHECKSUMS).write_text("".join(lines))
    return folder / CHECKSUMS


def verify_checksums(folder: Path) -> bool:
    """True when ``folder`` ships checksums and every file matches; False when it ships none."""
    folder = Path(folder)
    listing = folder / CHECKSUMS
    if not listing.exists():
        return False
    expected = {}
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ChecksumError(f"{listing}:{n}: not a sha256sum line: {line!r}")
        expected[name] = digest
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise ChecksumError(f"{path}: missing (listed in {listing})")
        if sha256_file(path) != digest:
            raise ChecksumError(f"{path}: sha256 mismatch (the file is corrupted or was changed; expected {digest[:12]}…)")
    weights = {p.relative_to(folder).as_posix() for p in _files(folder) if p.suffix in (".safetensors", ".bin", ".pt")}
    unlisted = sorted(weights - set(expected))
    if unlisted:
        raise ChecksumError(f"{folder / unlisted[0]}: weight file not listed in {listing}")
    return True
