"""experiments/colab.ipynb executed top to bottom in a Jupyter kernel (nbclient), with this checkout injected
instead of a clone (JAXTRADE_REPO) and its outputs in a temporary folder."""

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "experiments" / "colab.ipynb"


def _code(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_notebook_never_assumes_a_cpu_or_touches_the_accelerator_in_its_kernel():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = _code(nb)
    for forbidden in ("JAX_PLATFORMS", "xla_force_host_platform", "devices('cpu')", 'devices("cpu")',
                      "CUDA_VISIBLE_DEVICES"):
        assert forbidden not in code, forbidden
    # The kernel itself never imports JAX (a TPU opens in one process only): JAX runs in the commands.
    assert not any(line.lstrip().startswith(("import jax", "from jax")) for line in code.splitlines())
    assert all(not c.outputs for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import jaxtrade

    if not Path(jaxtrade.__file__).resolve().is_relative_to(REPO):
        # The install cell would `pip install -e` this checkout into the test's environment: not from a test.
        pytest.skip(f"jaxtrade is imported from {jaxtrade.__file__}, not from this checkout (pip install -e)")
    work = tmp_path / "run"
    monkeypatch.setenv("JAXTRADE_REPO", str(REPO))
    monkeypatch.setenv("JAXTRADE_WORK_DIR", str(work))
    monkeypatch.setenv("JAXTRADE_SYNTH_YEARS", "0.6")  # smaller than the notebook's default: loading is faster
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / "colab.executed.ipynb")  # for a look at what the user would see

    texts, images, html = [], 0, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", out
            if out.output_type == "stream":
                texts.append(out.text)
            data = out.get("data", {})
            images += "image/png" in data
            html.append(data.get("text/html", ""))
            texts.append(data.get("text/plain", ""))
    text = "".join(texts)
    assert f"already installed from {REPO}" in text  # the injected checkout, not a clone
    assert "devices: [" in text and "device count:" in text
    assert "processed: ['Bank_Nifty_5', 'Nifty_2']" in text
    # The report (read back from the file the sequence wrote) and both plots inline.
    report = (work / "reports" / "smoke_report.txt").read_text()
    assert "Nifty_2" in report and report.strip() in text
    assert images == 2
    summary = json.loads((work / "checkpoints" / "smoke" / "Nifty_2" / "summary.json").read_text())
    assert set(summary["stages"]) >= {"ppo", "moe", "maml"}
    pth = work / "checkpoints" / "smoke" / "models" / "Nifty_2_final_model.pth"
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "not written (PyTorch was not installed" in text
    else:
        assert pth.exists()
        assert any("Nifty_2_final_model.pth" in h and "href" in h for h in html), "no download link"
