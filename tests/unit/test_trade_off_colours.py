"""The trade-off figures (post-hoc EMA sweep, guidance) colour each run alike in every panel. The
class-accuracy panel draws only the conditional runs; before, matplotlib's colour cycle gave its
first curve (cdcgan, orange elsewhere) the first colour, blue: dcgan's in the other panels."""

from evaluations import report_figures


def test_a_run_keeps_its_colour_in_a_panel_other_runs_skip(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(report_figures, "_save_figure", lambda fig, path: figures.append(fig))
    uncond = [(0.05, {"fd_digits": 10.0, "precision": 0.6, "recall": 0.9}),
              (0.1, {"fd_digits": 11.0, "precision": 0.62, "recall": 0.88})]
    cond = [(0.05, {"fd_digits": 9.0, "precision": 0.8, "recall": 0.85, "class_accuracy": 0.99}),
            (0.1, {"fd_digits": 9.5, "precision": 0.81, "recall": 0.84, "class_accuracy": 0.98})]
    report_figures._trade_off_figure([("dcgan", uncond), ("cdcgan", cond)], str(tmp_path / "f.png"), "σ_rel",
                                     "sweep", "FD-digits")
    fd, *_, accuracy = figures[0].axes
    colour = {c.get_label(): c.lines[0].get_color() for c in fd.containers}
    assert colour["dcgan"] != colour["cdcgan"]
    assert [c.get_label() for c in accuracy.containers] == ["cdcgan"]
    assert accuracy.containers[0].lines[0].get_color() == colour["cdcgan"]
