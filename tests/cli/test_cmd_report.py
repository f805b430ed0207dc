import base64
import io
import re

from PIL import Image

from digitnet.cli import main
from digitnet.io import load_model
from tests.cli.conftest import run_cli


def test_report_command_writes_a_self_contained_page(small_run, tmp_path):
    out = tmp_path / "report.html"
    result = run_cli("report", small_run, "-o", out, "--dpi", "30", "--robustness-count", "200")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}"
    assert "confusion:" in result.stderr  # one progress line per picture
    text = out.read_text()
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == 14
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    accuracy = load_model(small_run).metrics["test_accuracy"]  # measured by `digitnet train` on the same test set
    assert f"Accuracy <b>{accuracy:.4f}</b>" in text
    assert "784-32-10" in text


def test_report_defaults_to_the_run_directory_and_quiet_prints_only_the_path(small_run, tmp_path, capsys):
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("model.safetensors", "config.json"):
        (copy / name).write_bytes((small_run / name).read_bytes())
    assert main(["report", str(copy), "--dpi", "20", "--robustness-count", "50", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote {copy / 'report.html'}" and captured.err == ""
    assert (copy / "report.html").read_text().count("<img ") == 10  # no history.json, no initial weights


def test_report_errors_are_one_line(small_run, tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(small_run), "-o", str(tmp_path / "no" / "r.html")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("digitnet report: error: ") for line in lines)
    assert "does not exist" in lines[0] and "does not exist" in lines[1]
