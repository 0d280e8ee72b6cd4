"""Test-wide isolation: no test may download anything or touch the user's caches."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hf" / "hub"))
    monkeypatch.setenv("OPENBLIP_CACHE", str(root / "openblip"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
