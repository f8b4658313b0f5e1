"""Every Python block of ``docs/migrating.md`` runs, each in a fresh namespace."""

import pathlib
import re

import pytest

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "migrating.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_the_page_has_examples_for_each_section():
    assert len(BLOCKS) >= 10
    text = PAGE.read_text()
    headings = ("## From torch-dct", "## From pytorch-acdc", "## From the ACDC authors' Torch code",
                "## From hadamard-transform and FFHT", "### FFHT", "## From scikit-learn's RBFSampler",
                "## From scikit-learn-extra's Fastfood")
    for heading in headings:
        assert heading in text


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_block_runs(index):
    exec(compile(BLOCKS[index], f"{PAGE.name}[block {index}]", "exec"), {"__name__": "__docs__"})
