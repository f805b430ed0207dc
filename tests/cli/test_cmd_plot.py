import pytest

from digitnet.cli import main
from digitnet.viz import KINDS, PlotOptions, PlotSource, png_size, render
from tests.cli.conftest import run_cli
from tests.viz.support import assert_drawn, open_png

MLP_KINDS = sorted(set(KINDS) - {"filters", "feature-maps"})
FLAGS = {"robustness": ["--count", "150"], "forward": ["--index", "3"],
         "predictions": ["--index", "40", "--count", "8"], "weight-change": ["--layer", "2"],
         "embedding": ["--count", "300"], "first-layer": ["--count", "16"]}
OPTIONS = {"robustness": PlotOptions(count=150), "forward": PlotOptions(index=3),
           "predictions": PlotOptions(index=40, count=8), "weight-change": PlotOptions(layer=2),
           "embedding": PlotOptions(count=300), "first-layer": PlotOptions(count=16)}


@pytest.fixture(scope="module")
def source(small_run):
    return PlotSource.open(small_run)


@pytest.mark.parametrize("kind", MLP_KINDS)
def test_plot_writes_a_valid_png_of_the_expected_size(kind, small_run, source, tmp_path, capsys):
    out = tmp_path / f"{kind}.png"
    assert main(["plot", kind, str(small_run), "-o", str(out), "--dpi", "30", *FLAGS.get(kind, [])]) == 0
    expected = png_size(render(kind, source, OPTIONS.get(kind, PlotOptions())), 30)
    image = open_png(out)
    assert image.size == expected
    assert_drawn(image)
    assert capsys.readouterr().out.strip() == f"wrote {out} ({expected[0]}x{expected[1]})"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # atomic: no temporary file left


def test_plot_as_a_user_runs_it(small_run, tmp_path):
    result = run_cli("plot", "confusion", small_run, "-o", tmp_path / "c.png", "--dpi", "30")
    assert result.returncode == 0, result.stderr
    assert open_png(tmp_path / "c.png").size == (360, 168)  # 12 x 5.6 inches at 30 dpi
    result = run_cli("plot", "architecture", small_run / "model.safetensors", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert open_png(tmp_path / "architecture.png").size == (900, 720)  # default name and 100 dpi


def test_plot_help_lists_every_kind_and_what_it_needs():
    result = run_cli("plot", "--help")
    assert result.returncode == 0
    for kind in KINDS:
        assert f"  {kind} " in result.stdout
    assert "curves             training and validation loss" in result.stdout
    assert "[needs: run dir]" in result.stdout and "[needs: CNN]" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["curves", "{run}/model.safetensors"], "needs a run directory with history.json"),
    (["filters", "{run}"], "needs a convolutional network"),
    (["forward", "{run}", "--index", "10000"], "outside the test set (0-9999)"),
    (["confusion", "{run}/nothing"], "does not exist"),
    (["confusion", "{run}", "-o", "{run}/missing/x.png"], "does not exist"),
])
def test_plot_errors_are_one_line_and_exit_2(args, message, small_run, capsys):
    argv = ["plot", *[a.format(run=small_run) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("digitnet plot: error: ")
    assert message in err


def test_unknown_kind_is_a_usage_error(small_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", "pie", str(small_run)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'pie'" in capsys.readouterr().err


def test_plot_sweep_draws_a_sweep_directory_and_refuses_anything_else(tmp_path):
    from tests.viz.test_sweep import fake_sweep

    sweep = fake_sweep(tmp_path / "sweep")
    result = run_cli("plot", "sweep", sweep, "-o", tmp_path / "sweep.png")
    assert result.returncode == 0, result.stderr
    assert open_png((tmp_path / "sweep.png").read_bytes()).size[0] > 600
    (tmp_path / "empty").mkdir()
    result = run_cli("plot", "sweep", tmp_path / "empty", "-o", tmp_path / "no.png")
    assert result.returncode == 2 and "is not a sweep directory" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "no.png").exists()
