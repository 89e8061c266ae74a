import pytest

from dollar import reports


def test_percent_ci_formats_a_table_cell_and_prose():
    row = {"motion": 0.953125, "motion_wilson95": (0.9133, 0.9751)}
    assert reports.percent_ci(row, "motion") == "95.3% [91, 98]"
    assert reports.percent_ci(row, "motion", prose=True) == "95.3% (95% CI 91-98)"


def test_write_readme_section_replaces_only_its_section(tmp_path, monkeypatch):
    (tmp_path / "README.md").write_text("# X\n<!-- a:start -->\nold\n<!-- a:end -->\n<!-- b:start -->\nkeep\n<!-- b:end -->\n")
    monkeypatch.setattr(reports, "ROOT", str(tmp_path))
    reports.write_readme_section("a", "\n| new | table |\n\n")
    assert (
        tmp_path / "README.md"
    ).read_text() == "# X\n<!-- a:start -->\n| new | table |\n<!-- a:end -->\n<!-- b:start -->\nkeep\n<!-- b:end -->\n"
    with pytest.raises(ValueError):
        reports.write_readme_section("c", "no such section")


def test_figure_cell_formats_a_mean_and_its_interval():
    fig = {"mean": 0.6123, "low": 0.58, "high": 0.6444, "n": 3}
    assert reports.figure_cell(fig, pct=True) == "61.2 [58.0, 64.4]"
    assert reports.figure_cell(fig, digits=2, ci=False) == "0.61"
    assert reports.figure_cell({"mean": 2.5, "low": None, "high": None, "n": 1}) == "2.500"
    assert reports.figure_cell({"mean": None, "low": None, "high": None, "n": 0}) == reports.figure_cell(None) == "n/a"


def test_accuracy_cells_in_a_markdown_row_keep_the_tables_column_order():
    def fig(mean):
        return {"mean": mean, "low": mean - 0.1, "high": mean + 0.05, "n": 3}

    semantic = {"motion": fig(0.8), "colour": fig(0.9), "composition": {"mean": None, "low": None, "high": None, "n": 0}, "shape": fig(0.5)}
    row = reports.markdown_row(["student-4", "4", *reports.accuracy_cells(semantic)])
    assert row == "| student-4 | 4 | 90.0 [80.0, 95.0] | 80.0 [70.0, 85.0] | 50.0 [40.0, 55.0] | n/a |"
