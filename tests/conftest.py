from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FER = SHARED / "data" / "fer2013"
GROUP_PHOTOS = SHARED / "data" / "group-photos"


@pytest.fixture(scope="session")
def fer_root() -> Path:
    assert FER.is_dir(), f"{FER} is missing: the tests need ../shared beside the repository"
    return FER


@pytest.fixture(scope="session")
def group_photos() -> Path:
    assert GROUP_PHOTOS.is_dir(), f"{GROUP_PHOTOS} is missing"
    return GROUP_PHOTOS
