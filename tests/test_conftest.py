"""The test suite's own rules: a missing test extra skips locally and fails in CI."""

import numpy as np
import pytest

from conftest import require


def test_require_imports_skips_outside_ci_and_fails_in_ci(monkeypatch):
    assert require("numpy") is np
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no_such_module_xbkg is not importable"):
        require("no_such_module_xbkg")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"test extra.*CI=true: required"):
        require("no_such_module_xbkg")
