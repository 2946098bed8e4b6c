"""The Prometheus files in deploy/prometheus/: valid, and the alerts fire when they should (promtool)."""

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import in_ci

FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool():
    path = shutil.which("promtool")
    if path is None:
        if in_ci():
            pytest.fail("promtool (Debian's prometheus package) is required in CI")
        pytest.skip("promtool not installed")
    return path


@pytest.mark.parametrize(
    "args",
    [("check", "rules", "alerts.yml"), ("test", "rules", "alerts_test.yml"), ("check", "config", "prometheus.yml")],
)
def test_promtool_accepts(promtool, args):
    result = subprocess.run([promtool, *args], cwd=FOLDER, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
