"""The test helpers' own promises: a green CI means the services and tools were really used."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import smtp_sink


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_tls_tests_without_openssl_fail_under_ci_and_skip_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(smtp_sink.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", ci)
    caught: BaseException | None = None
    try:
        smtp_sink.self_signed_certificate(tmp_path)
    except (pytest.fail.Exception, pytest.skip.Exception) as exc:
        caught = exc
    assert type(caught) is outcome and "openssl" in str(caught)


def test_the_certificate_is_made_when_openssl_is_there(tmp_path: Path) -> None:
    if smtp_sink.shutil.which("openssl") is None:
        pytest.skip("no openssl here (the test above covers that case)")
    cert, key = smtp_sink.self_signed_certificate(tmp_path)
    assert cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in key.read_text()
