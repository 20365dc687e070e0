"""The `mlq` command line as a new user meets it: help texts, messages, and what the README tells them to type."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from mlqueue.cli import cli
from mlqueue.dev import stop_grace_s
from store.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def help_of(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="mlq", terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def test_help_lists_every_command_s_whole_summary_without_cutting_it() -> None:
    for args in ((), ("jobs",), ("datasets",)):
        commands = help_of(*args).split("Commands:")[1]
        assert "..." not in commands, commands
    assert "register it as the next version of --model" in " ".join(help_of().split())


def test_worker_help_mentions_cpu_n() -> None:
    assert "cpu:N" in help_of("worker")


def test_mlq_dev_waits_longer_than_the_workers_shutdown_grace() -> None:
    assert stop_grace_s({}) > Settings().shutdown_grace_s
    assert stop_grace_s({"MLQ_SHUTDOWN_GRACE_S": "60"}) > 60
    assert stop_grace_s({"MLQ_SHUTDOWN_GRACE_S": "not a number"}) > Settings().shutdown_grace_s


def test_local_training_on_the_base_install_says_to_install_the_worker_extra(tmp_path: Path) -> None:
    # The base install has no numpy: block it, as if it were absent.
    code = (
        "import sys; sys.modules['numpy'] = None; from mlqueue.cli import main; "
        f"sys.argv = ['mlq', 'train', '--local', '--data', {str(tmp_path / 'x.csv')!r}, '--target', 'y', "
        "'--algorithm', 'ridge', '--model', 'm']; main()"
    )
    (tmp_path / "x.csv").write_text("a,y\n1,2\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert "mlqueue[worker]" in result.stderr and "No module named" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_bad_params_key_is_named_before_anything_is_uploaded(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,y\n1,2\n")
    # No service answers at this URL: a refusal here proves nothing was sent.
    base = ["train", "--data", str(data), "--model", "m", "--url", "http://127.0.0.1:9"]
    for extra, words in (
        (["--target", "y", "--algorithm", "mlp", "--params", '{"epoch": 3}'], "epoch:"),
        (["--target", "kind", "--algorithm", "mlp"], "--target 'kind' not in the header"),
    ):
        result = CliRunner().invoke(cli, [*base, *extra], prog_name="mlq")
        assert result.exit_code == 2, result.output
        assert words in result.output and "ConnectError" not in result.output, result.output


def test_the_readme_s_mlq_commands_work_as_written_in_a_fresh_shell() -> None:
    readme = (ROOT / "README.md").read_text()
    # Every shell block that runs `mlq` must first put .venv/bin on the PATH (or call .venv/bin/mlq itself).
    for block in re.findall(r"```sh\n(.*?)```", readme, re.S):
        first = next((line for line in block.splitlines() if re.match(r"\s*mlq ", line)), None)
        if first is None:
            continue
        before = block[: block.index(first)]
        assert "source .venv/bin/activate" in before, block


def test_mlq_dev_tells_how_to_get_mlq_on_the_path_when_it_is_not() -> None:
    from mlqueue.dev import activate_hint

    bin_dir = str(Path(sys.executable).parent)
    assert f"source {bin_dir}/activate" in activate_hint({"PATH": "/usr/bin"})
    assert activate_hint({"PATH": f"/usr/bin:{bin_dir}"}) == ""
