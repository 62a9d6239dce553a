"""The installed `streamrec` command: every subcommand is there, errors are clear."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.settings import Settings

STREAMREC = Path(sys.executable).parent / "streamrec"


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(STREAMREC), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, check=False)


def test_the_installed_command_lists_every_subcommand_from_any_directory(tmp_path: Path) -> None:
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("demo", "serve", "consume", "recommend", "train", "evaluate", "lag",
                    "bench"):
        assert f"  {command} " in result.stdout


def test_recommend_without_services_says_what_to_do(tmp_path: Path) -> None:
    result = run("recommend", "--user-id", "u1", cwd=tmp_path,
                 env={"STREAMREC_STATE_DIR": str(tmp_path), "STREAMREC_REDIS_URL": "",
                      "REDIS_URL": "", "STREAMREC_KAFKA_BOOTSTRAP": ""})
    assert result.returncode == 2
    assert "no Redis configured" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_demo_generates_an_api_token_in_its_state_folder_and_wires_it(
    tmp_path: Path,
) -> None:
    import stat

    from cli.demo import API_TOKEN_FILE, _child_env, demo_api_token

    settings = Settings(state_dir=tmp_path, api_token="")
    token = demo_api_token(settings)
    path = tmp_path / API_TOKEN_FILE
    assert len(token) >= 32 and path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert demo_api_token(settings) == token  # made once: restarts keep it
    assert _child_env(settings)["STREAMREC_API_TOKEN"] == token  # the API gets it
    configured = Settings(state_dir=tmp_path, api_token="t" * 40)
    assert _child_env(configured)["STREAMREC_API_TOKEN"] == "t" * 40
