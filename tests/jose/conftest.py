"""Session-wide key material for the JOSE tests: generated once, reused everywhere."""

from __future__ import annotations

import pytest
from jose_testkit import Keys, make_keys


@pytest.fixture(scope="session")
def keys() -> Keys:
    return make_keys()
