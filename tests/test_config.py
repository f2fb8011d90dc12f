"""Settings from defaults, VOXWIRE_* variables and flags; the README table is generated."""

from __future__ import annotations

import argparse
import subprocess
import sys

import msgspec
import pytest

from server import config
from tests.support import ROOT


def test_precedence_defaults_env_flags() -> None:
    s = config.load_settings({})
    assert s == config.Settings()
    s = config.load_settings(
        {"VOXWIRE_PORT": "9000", "VOXWIRE_OPUS_FEC": "true", "VOXWIRE_MAX_UNSENT_AUDIO_S": "2.5"},
        {"port": "9100", "host": None},
    )
    assert (s.port, s.opus_fec, s.max_unsent_audio_s, s.host) == (9100, True, 2.5, "127.0.0.1")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"VOXWIRE_PORT": "eighty"}, "$.port"),
        ({"VOXWIRE_MAX_UNSENT_AUDIO_S": "0"}, "$.max_unsent_audio_s"),
        ({"VOXWIRE_LOG_LEVEL": "loud"}, "$.log_level"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], needle: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=needle.replace("$", r"\$")):
        config.load_settings(env)


def test_every_setting_has_a_flag() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    ns = parser.parse_args(["--max-unsent-audio-s", "3", "--no-warmup", "--log-format", "console"])
    s = config.load_settings({}, vars(ns))
    assert (s.max_unsent_audio_s, s.warmup, s.log_format) == (3.0, False, "console")


def test_readme_settings_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    assert config.settings_table() in readme, "run: python -m server.config and paste into README"


def test_serve_rejects_a_bad_setting_clearly() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", "notaport"],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert b"bad setting" in proc.stderr and b"port" in proc.stderr


def test_engine_threads_fit_the_cpus_this_process_may_use() -> None:
    """0 (the default) gives each engine process every usable CPU up to 4 for onnxruntime,
    and as many engines as fit the CPUs at ``engine_busy_threads`` (1) each: under load
    a core each; set values are kept."""
    cpus = config.usable_cpus()
    per = min(cpus, 4)
    s = config.load_settings({})
    assert (s.engines(), s.engine_cpu_threads(), s.engine_busy_threads) == (cpus, per, 1)
    # without narrow syntheses (or with no engine processes): as many as fit at ``per``
    s = config.load_settings({"VOXWIRE_ENGINE_BUSY_THREADS": "0"})
    assert (s.engines(), s.engine_cpu_threads()) == (max(1, cpus // per), per)
    s = config.load_settings({"VOXWIRE_ENGINE_ISOLATION": "thread"})
    assert (s.engines(), s.engine_cpu_threads()) == (max(1, cpus // per), per)
    s = config.load_settings({"VOXWIRE_ENGINE_THREADS": "1"})
    assert (s.engines(), s.engine_cpu_threads()) == (1, per)
    s = config.load_settings({"VOXWIRE_ENGINE_PROCESS_THREADS": "1"})
    assert (s.engines(), s.engine_cpu_threads()) == (cpus, 1)
    s = config.load_settings({"VOXWIRE_ENGINE_THREADS": "3", "VOXWIRE_ENGINE_PROCESS_THREADS": "2"})
    assert (s.engines(), s.engine_cpu_threads()) == (3, 2)


def test_sixteen_cpus_share_out_among_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a bigger machine the default neither oversubscribes nor leaves cores idle."""
    monkeypatch.setattr(config, "usable_cpus", lambda: 16)
    s = config.load_settings({})
    assert (s.engines(), s.engine_cpu_threads()) == (16, 4)  # four threads alone, one busy
    s = config.load_settings({"VOXWIRE_ENGINE_BUSY_THREADS": "0"})
    assert (s.engines(), s.engine_cpu_threads()) == (4, 4)
    monkeypatch.setattr(config, "usable_cpus", lambda: 3)
    assert (s.engines(), s.engine_cpu_threads()) == (1, 3)


def test_a_pinned_server_counts_only_its_cpus() -> None:
    """A real process started on one CPU (taskset) resolves one engine thread."""
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c",
         "from server import config; s = config.load_settings({}); "
         "print(config.usable_cpus(), s.engines())"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["1", "1"]
